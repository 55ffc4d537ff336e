// The decoder-only language model every family ends in: token embedding, pre-norm decoder blocks,
// final norm, LM head (or tied embeddings). Families feed it inputs_embeds (text rows plus spliced
// image rows), RoPE tables (1-D or M-RoPE) and a mask; a hook before each layer lets a family insert
// its own layers (gated cross-attention) without the LM knowing about them.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lib/nn/modules.h"

namespace vlm {

struct DecoderLmConfig {
  int64_t vocab_size = 0;
  int num_layers = 0;
  DecoderBlockConfig block;  // block.attn.hidden_size is the model width
  NormConfig final_norm;
  bool tie_word_embeddings = false;
  std::string final_norm_name = "norm";  // e.g. "final_layernorm"
  double init_std = kDefaultInitStd;
  double lm_head_init_std = 0.0;  // 0 = init_std (a model may draw its head with another config's range)
};

class DecoderLm : public Module<float> {
 public:
  using LayerHook = std::function<Tensor(int layer, const Tensor& h)>;

  DecoderLm(const DecoderLmConfig& cfg, Rng& rng);
  Tensor embed(const std::vector<int64_t>& ids, const Shape& shape) const;  // [B, T] -> [B, T, C]
  // inputs_embeds [B, T, C] -> final-normed hidden [B, T, C]. `before_layer(i, h)` runs before
  // layer i when set; `cache` holds one slot per layer. keep_last > 0 (no cache): the hidden states
  // of the last keep_last positions only, [B, keep_last, C], as HF's logits_to_keep but pruned
  // earlier: the last layer computes the other positions' keys and values and nothing else of them.
  Tensor forward(Tensor h, const RopeTables<float>* rope, const AttnMask& mask, KvCache<float>* cache = nullptr,
                 const LayerHook& before_layer = {}, int64_t keep_last = 0) const;
  Tensor logits(const Tensor& hidden) const;  // [B, T, C] -> [B, T, V]
  KvCache<float> make_cache(int64_t batch) const;

  // Names: model_prefix + {embed_tokens, layers.i, <final_norm_name>}, head_prefix + weight.
  void visit_parts(const std::string& model_prefix, const std::string& head_prefix, const ParamVisitor<float>& v);
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override {
    visit_parts(prefix + "model.", prefix + "lm_head.", v);
  }
  const DecoderLmConfig& config() const { return cfg_; }
  int64_t hidden_size() const { return cfg_.block.attn.hidden_size; }

  Embedding<float> embed_tokens;
  std::vector<std::unique_ptr<DecoderBlock<float>>> layers;
  Norm<float> norm;
  std::optional<Linear<float>> lm_head;  // absent when tied

 private:
  DecoderLmConfig cfg_;
};

}  // namespace vlm
