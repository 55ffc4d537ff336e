// Ref: transformers 5.17 models/idefics/perceiver.py (IdeficsPerceiverResampler,
// IdeficsPerceiverAttention, IdeficsMLP).
#include "architectures/flamingo/perceiver_resampler.h"

#include "lib/ops/ops.h"

namespace vlm::flamingo {

namespace {

AttentionConfig perceiver_attention(const PerceiverConfig& c) {
  AttentionConfig a;
  a.hidden_size = c.embed_dim;  // q from the latents, output back to embed_dim
  a.kv_input_size = c.embed_dim;
  a.num_heads = c.n_heads;
  a.head_dim = c.head_dim;
  // HF scales q by head_dim^-0.5 before the product (the default scale here); the row-max
  // subtraction before the softmax is what attention() does anyway.
  if (c.qk_layer_norms) a.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};  // nn.LayerNorm(head_dim)
  a.o_name = "output_proj";
  a.q_norm_name = "q_layer_norm";
  a.k_norm_name = "k_layer_norm";
  a.init_std = c.init_std;
  return a;
}

MlpConfig perceiver_mlp(const PerceiverConfig& c) {
  MlpConfig m;
  m.hidden_size = c.embed_dim;
  m.intermediate_size = c.intermediate_size > 0 ? c.intermediate_size : 4 * c.embed_dim;
  m.act = Act::kRelu;
  m.bias = false;
  m.fc1_name = "fc";
  m.fc2_name = "c_proj";
  m.init_std = c.init_std;
  return m;
}

}  // namespace

PerceiverAttention::PerceiverAttention(const PerceiverConfig& cfg, Rng& rng)
    : context_layer_norm(cfg.embed_dim), latents_layer_norm(cfg.embed_dim), attn(perceiver_attention(cfg), rng) {}

Tensor PerceiverAttention::forward(const Tensor& context, const Tensor& latents) const {
  const Tensor ctx = context_layer_norm.forward(context);
  const Tensor lat = latents_layer_norm.forward(latents);
  // Keys and values over cat([context, latents]) along the sequence: context first.
  return attn.forward_cross(lat, concat<float>({ctx, lat}, 1), AttnMask{});
}

void PerceiverAttention::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  context_layer_norm.visit(prefix + "context_layer_norm.", v);
  latents_layer_norm.visit(prefix + "latents_layer_norm.", v);
  attn.visit(prefix, v);
}

PerceiverMlp::PerceiverMlp(const PerceiverConfig& cfg, Rng& rng) : ln(cfg.embed_dim), mlp(perceiver_mlp(cfg), rng) {}

Tensor PerceiverMlp::forward(const Tensor& x) const { return mlp.forward(ln.forward(x)); }

void PerceiverMlp::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  ln.visit(prefix + "ln.", v);
  mlp.visit(prefix, v);
}

PerceiverResampler::PerceiverResampler(const PerceiverConfig& cfg, Rng& rng)
    : latents(param_normal<float>({cfg.n_latents, cfg.embed_dim}, rng, 1.0)),  // HF: torch.randn
      layer_norm(cfg.embed_dim),
      cfg_(cfg) {
  VLM_CHECK(cfg.embed_dim > 0 && cfg.n_latents > 0 && cfg.depth >= 0 && cfg.n_heads > 0 && cfg.head_dim > 0,
            "perceiver resampler: embed_dim, n_latents, n_heads and head_dim must be positive");
  for (int b = 0; b < cfg.depth; ++b) {
    attn_blocks.push_back(std::make_unique<PerceiverAttention>(cfg, rng));
    mlp_blocks.push_back(std::make_unique<PerceiverMlp>(cfg, rng));
  }
}

Tensor PerceiverResampler::forward(const Tensor& context) const {
  VLM_CHECK(context.ndim() == 3 && context.dim(2) == cfg_.embed_dim,
            "perceiver resampler: context must be [N, S, " << cfg_.embed_dim << "], got "
                                                           << shape_str(context.shape()));
  const int64_t N = context.dim(0);
  // latents.repeat(N, 1, 1)
  Tensor lat = broadcast_to(reshape(latents, {1, cfg_.n_latents, cfg_.embed_dim}), {N, cfg_.n_latents, cfg_.embed_dim});
  for (std::size_t b = 0; b < attn_blocks.size(); ++b) {
    lat = add(attn_blocks[b]->forward(context, lat), lat);
    lat = add(mlp_blocks[b]->forward(lat), lat);
  }
  return layer_norm.forward(lat);
}

void PerceiverResampler::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  v(prefix + "latents", latents);
  for (std::size_t b = 0; b < attn_blocks.size(); ++b) {
    const std::string p = prefix + "blocks." + std::to_string(b) + ".";
    attn_blocks[b]->visit(p + "0.", v);
    mlp_blocks[b]->visit(p + "1.", v);
  }
  layer_norm.visit(prefix + "layer_norm.", v);
}

}  // namespace vlm::flamingo
