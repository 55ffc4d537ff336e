// IDEFICS's gated cross-attention layer (HF IdeficsGatedCrossAttentionLayer), run before every
// cross_layer_interval-th decoder layer:
//   a = cross_attn(input_layernorm(h), image states, image mask), zeroed where the token sees no image
//   h = h + tanh(alpha_cross_attn) * a
//   h = h + tanh(alpha_dense) * mlp(post_attention_layernorm(h))
// alpha is [1] ("float") or [1, 1, D] ("vector"). Spec: docs/flamingo.md §4.2.7.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/core/random.h"
#include "lib/nn/modules.h"

namespace vlm::flamingo {

enum class AlphaType { kFloat, kVector };
enum class AlphaInit { kZeros, kOnes, kNormal };

struct GatedXattnConfig {
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t kv_input_size = 0;  // vision embed_dim
  Act act = Act::kSilu;
  double rms_norm_eps = 1e-6;
  bool qk_layer_norms = false;  // RMSNorm(head_dim) on the cross-attention q and k
  AlphaType alpha_type = AlphaType::kFloat;
  AlphaInit alpha_init = AlphaInit::kZeros;
  double alphas_init_range = 0.0;
  double init_std = kDefaultInitStd;
};

// The image keys/values one gated layer attends to, projected once per prompt: [B, S, H, hd]
// (k after the optional k_layer_norm).
struct CrossKv {
  Tensor k, v;
};

// Which image positions each query token sees. allowed [B, Tq, S] (S = N_img * tokens per image)
// and gate [B, Tq] (1 where the token sees at least one image).
struct CrossMask {
  AttnMask mask;
  Tensor gate;  // [B, Tq, 1], 0 or 1
};

class GatedXattnLayer : public Module<float> {
 public:
  GatedXattnLayer(const GatedXattnConfig& cfg, Rng& rng);
  // image_states [B, S, kv_input_size] -> the keys and values for forward().
  CrossKv project(const Tensor& image_states) const;
  // h [B, Tq, D] -> h after both gated residual adds.
  Tensor forward(const Tensor& h, const CrossKv& kv, const CrossMask& mask) const;
  // The cross-attention branch alone (before tanh(alpha)): [B, Tq, D], exactly 0 on gated rows.
  Tensor cross_attention(const Tensor& h, const CrossKv& kv, const CrossMask& mask) const;
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;
  const GatedXattnConfig& config() const { return cfg_; }

  Attention<float> cross_attn;  // q/k/v/o_proj, q_layer_norm, k_layer_norm
  GatedMlp<float> mlp;
  RMSNorm<float> input_layernorm;
  RMSNorm<float> post_attention_layernorm;
  Tensor alpha_cross_attn;
  Tensor alpha_dense;

 private:
  GatedXattnConfig cfg_;
};

}  // namespace vlm::flamingo
