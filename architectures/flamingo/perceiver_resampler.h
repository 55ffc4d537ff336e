// IDEFICS's Perceiver resampler (HF models/idefics/perceiver.py): a fixed set of learned latents
// cross-attends, block by block, to [context, latents] (context first), and comes out
// layer-normed: [N, S, Dv] -> [N, n_latents, Dv]. Spec: docs/flamingo.md §4.2.2.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lib/core/random.h"
#include "lib/nn/modules.h"

namespace vlm::flamingo {

struct PerceiverConfig {
  int64_t embed_dim = 0;  // vision embed_dim: context, latents and output width
  int depth = 6;          // resampler_depth
  int64_t n_heads = 16;   // resampler_n_heads
  int64_t head_dim = 96;  // resampler_head_dim
  int64_t n_latents = 64;
  bool qk_layer_norms = false;  // qk_layer_norms_perceiver: LayerNorm(head_dim) on q and k
  int64_t intermediate_size = 0;  // MLP width; HF uses 4 * vision embed_dim
  double init_std = kDefaultInitStd;
};

// blocks.{b}.0: latents attend to [context_layer_norm(x), latents_layer_norm(lat)].
class PerceiverAttention : public Module<float> {
 public:
  PerceiverAttention(const PerceiverConfig& cfg, Rng& rng);
  // context [N, S, Dv], latents [N, n, Dv] -> [N, n, Dv] (output_proj applied, no residual).
  Tensor forward(const Tensor& context, const Tensor& latents) const;
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;

  LayerNorm<float> context_layer_norm;
  LayerNorm<float> latents_layer_norm;
  Attention<float> attn;  // q_proj, k_proj, v_proj, output_proj, q_layer_norm, k_layer_norm
};

// blocks.{b}.1: c_proj(relu(fc(ln(x)))), no biases.
class PerceiverMlp : public Module<float> {
 public:
  PerceiverMlp(const PerceiverConfig& cfg, Rng& rng);
  Tensor forward(const Tensor& x) const;
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;

  LayerNorm<float> ln;
  Mlp<float> mlp;  // fc, c_proj
};

class PerceiverResampler : public Module<float> {
 public:
  PerceiverResampler(const PerceiverConfig& cfg, Rng& rng);
  // context [N, S, Dv] -> [N, n_latents, Dv]
  Tensor forward(const Tensor& context) const;
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;
  const PerceiverConfig& config() const { return cfg_; }

  Tensor latents;  // [n_latents, Dv]
  std::vector<std::unique_ptr<PerceiverAttention>> attn_blocks;
  std::vector<std::unique_ptr<PerceiverMlp>> mlp_blocks;
  LayerNorm<float> layer_norm;

 private:
  PerceiverConfig cfg_;
};

}  // namespace vlm::flamingo
