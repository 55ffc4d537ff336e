// Ref: transformers 5.17 models/idefics/modeling_idefics.py (IdeficsGatedCrossAttentionLayer,
// IdeficsAttention with is_cross_attention=True, IdeficsMLP, IdeficsRMSNorm).
#include "architectures/flamingo/gated_xattn.h"

#include "lib/ops/ops.h"

namespace vlm::flamingo {

namespace {

AttentionConfig xattn_config(const GatedXattnConfig& c) {
  AttentionConfig a;
  a.hidden_size = c.hidden_size;
  a.kv_input_size = c.kv_input_size;
  a.num_heads = c.num_heads;  // head_dim = hidden / heads, scale head_dim^-0.5, no RoPE, no biases
  if (c.qk_layer_norms) a.qk_norm = NormConfig{NormKind::kRmsNorm, c.rms_norm_eps, false};
  a.q_norm_name = "q_layer_norm";
  a.k_norm_name = "k_layer_norm";
  a.init_std = c.init_std;
  return a;
}

GatedMlpConfig xattn_mlp(const GatedXattnConfig& c) {
  GatedMlpConfig m;
  m.hidden_size = c.hidden_size;
  m.intermediate_size = c.intermediate_size;
  m.act = c.act;
  m.bias = false;
  m.init_std = c.init_std;
  return m;
}

Tensor make_alpha(const GatedXattnConfig& c, Rng& rng) {
  const Shape s = c.alpha_type == AlphaType::kVector ? Shape{1, 1, c.hidden_size} : Shape{1};
  switch (c.alpha_init) {
    case AlphaInit::kZeros: return param_full<float>(s, 0.0f);
    case AlphaInit::kOnes: return param_full<float>(s, 1.0f);
    case AlphaInit::kNormal: return param_normal<float>(s, rng, c.alphas_init_range);
  }
  throw Error("gated cross-attention: invalid alpha initializer");
}

}  // namespace

GatedXattnLayer::GatedXattnLayer(const GatedXattnConfig& cfg, Rng& rng)
    : cross_attn(xattn_config(cfg), rng),
      mlp(xattn_mlp(cfg), rng),
      input_layernorm(cfg.hidden_size, cfg.rms_norm_eps),
      post_attention_layernorm(cfg.hidden_size, cfg.rms_norm_eps),
      alpha_cross_attn(make_alpha(cfg, rng)),
      alpha_dense(make_alpha(cfg, rng)),
      cfg_(cfg) {}

CrossKv GatedXattnLayer::project(const Tensor& image_states) const {
  const AttentionConfig& a = cross_attn.config();
  VLM_CHECK(image_states.ndim() == 3 && image_states.dim(2) == a.kv_input_size,
            "gated cross-attention: image states must be [B, S, " << a.kv_input_size << "], got "
                                                                  << shape_str(image_states.shape()));
  const int64_t B = image_states.dim(0), S = image_states.dim(1);
  Tensor k = reshape(cross_attn.k_proj->forward(image_states), {B, S, a.num_kv_heads, a.head_dim});
  if (cross_attn.k_norm) k = cross_attn.k_norm->forward(k);
  Tensor v = reshape(cross_attn.v_proj->forward(image_states), {B, S, a.num_kv_heads, a.head_dim});
  return {k, v};
}

Tensor GatedXattnLayer::cross_attention(const Tensor& h, const CrossKv& kv, const CrossMask& mask) const {
  const AttentionConfig& a = cross_attn.config();
  const int64_t B = h.dim(0), T = h.dim(1);
  Tensor q = reshape(cross_attn.q_proj->forward(input_layernorm.forward(h)), {B, T, a.num_heads, a.head_dim});
  if (cross_attn.q_norm) q = cross_attn.q_norm->forward(q);
  // A token that sees no image has every key masked: attention() gives exact zeros there (HF
  // computes a uniform average and then zeroes the row with cross_attention_gate). The gate is
  // applied as well, so the row is 0 whatever the attention op does with an empty row.
  const Tensor heads = attention(q, kv.k, kv.v, mask.mask, a.scale);
  const Tensor out = cross_attn.o_proj.forward(reshape(heads, {B, T, a.num_heads * a.head_dim}));
  return mul(out, mask.gate);
}

Tensor GatedXattnLayer::forward(const Tensor& h, const CrossKv& kv, const CrossMask& mask) const {
  VLM_CHECK(h.ndim() == 3 && h.dim(2) == cfg_.hidden_size,
            "gated cross-attention: h must be [B, T, " << cfg_.hidden_size << "], got " << shape_str(h.shape()));
  // No image at all (N_img = 0): every token is gated, and h + tanh(alpha) * 0 == h.
  const Tensor x = kv.k.defined() ? add(h, mul(vlm::tanh(alpha_cross_attn), cross_attention(h, kv, mask))) : h;
  return add(x, mul(vlm::tanh(alpha_dense), mlp.forward(post_attention_layernorm.forward(x))));
}

void GatedXattnLayer::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  v(prefix + "alpha_cross_attn", alpha_cross_attn);
  v(prefix + "alpha_dense", alpha_dense);
  cross_attn.visit(prefix + "cross_attn.", v);
  mlp.visit(prefix + "mlp.", v);
  input_layernorm.visit(prefix + "input_layernorm.", v);
  post_attention_layernorm.visit(prefix + "post_attention_layernorm.", v);
}

}  // namespace vlm::flamingo
