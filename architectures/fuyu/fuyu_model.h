// Fuyu (HF FuyuForCausalLM, transformers 5.17): no vision encoder. Raw normalized image patches
// [.., p·p·C] go through one Linear with bias (vision_embed_tokens) and are scattered into the rows of
// the token embeddings whose id is config.image_token_id (masked_scatter, row-major (batch, seq)
// order); the Persimmon LM follows: pre-LN with biased LayerNorms, fused query_key_value interleaved
// per head (view(B, S, H, 3, hd)), optional q/k LayerNorm over head_dim before RoPE, partial 1-D
// RoPE (rotate-half over the first int(hd · partial_rotary_factor) dims), dense, MLP
// dense_h_to_4h -> act -> dense_4h_to_h, final_layernorm, lm_head (no bias).
// Spec: docs/architectures.md §2; HF models/fuyu/modeling_fuyu.py,
// models/persimmon/modeling_persimmon.py, configuration_{fuyu,persimmon}.py.
//
// Inputs (HF processor names): input_ids [B, T]; attention_mask [B, T] (optional, 0 = padding);
// image_patches [B, N, p·p·C] or [N_total, p·p·C] (optional; rows of all images in batch order);
// position_ids [B, T] or [1, T] (optional; default arange(T) as HF's forward, which ignores padding).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "architectures/architecture.h"
#include "lib/nn/decoder_lm.h"

namespace vlm::fuyu {

// Everything the model reads from config.json, resolved as transformers 5.17 resolves it.
struct FuyuConfig {
  DecoderLmConfig lm;        // Persimmon text model (text_config)
  int64_t patch_size = 30;   // top level
  int64_t num_channels = 3;  // top level
  int64_t image_token_id = 71011;
  int64_t rotary_ndims = 0;  // int(head_dim · partial_rotary_factor)
  double partial_rotary_factor = 0.5;
  double rope_theta = 25000.0;
  double init_std = kDefaultInitStd;         // the Persimmon LM: text_config.initializer_range
  double top_init_std = kDefaultInitStd;  // vision_embed_tokens and lm_head: the top-level one
};

// Reads and validates the config; every unsupported value is an io::ConfigError naming its key.
FuyuConfig parse_config(const io::HfConfig& config);

class Fuyu : public Architecture {
 public:
  Fuyu(const io::HfConfig& config, Rng& rng);

  std::string_view family() const override { return "fuyu"; }
  const io::HfConfig& config() const override { return config_; }
  const FuyuConfig& parsed_config() const { return cfg_; }

  ForwardOutput forward(const Inputs& in, int64_t logits_to_keep = 0) override;
  std::pair<Tensor, std::unique_ptr<DecodeState>> prefill(const Inputs& in) override;
  Tensor decode(DecodeState& state, const std::vector<int64_t>& tokens) override;
  // Also extends position_ids (last position + 1) when the inputs carry them.
  Inputs append_tokens(const Inputs& in, const std::vector<int64_t>& tokens) const override;
  std::vector<std::pair<std::string, std::string>> name_aliases() const override;
  // No vision encoder: the patch embedding is the whole connector.
  std::vector<std::pair<std::string, std::string>> component_prefixes() const override {
    return {{"vision_embed_tokens.", "connector"}};
  }

  // Names as transformers 5.17 save_pretrained writes them (legacy layout):
  // language_model.model.*, language_model.lm_head.weight, vision_embed_tokens.{weight,bias}.
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;

  // image_patches (any rank >= 2, last dim p·p·C) -> features [..., D].
  Tensor image_features(const Tensor& patches) const;
  // RoPE tables for positions [Bc, T] (nullptr-equivalent when rotary_ndims == 0: check has_rope()).
  RopeTables<float> rope_for(const std::vector<int64_t>& positions, int64_t Bc, int64_t T) const;
  bool has_rope() const { return cfg_.rotary_ndims > 0; }

  DecoderLm language_model;
  Linear<float> vision_embed_tokens;

 private:
  struct Prepared {
    Tensor embeds;                   // [B, T, D] after the scatter
    Tensor features;                 // image features (undefined without image_patches)
    std::vector<int64_t> positions;  // [Bc, T]
    int64_t Bc = 1;
    std::vector<uint8_t> key_valid;  // [B, T], empty = all real
  };
  Prepared prepare(const Inputs& in) const;
  Fuyu(const io::HfConfig& config, FuyuConfig s, Rng& rng);

  io::HfConfig config_;
  FuyuConfig cfg_;
};

}  // namespace vlm::fuyu
