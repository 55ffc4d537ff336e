// Ref: transformers models/llama/modeling_llama.py (decoder layer, attention, gated MLP),
// models/clip/modeling_clip.py (encoder layer), models/persimmon/modeling_persimmon.py (fused
// per-head qkv, q/k layernorm), models/qwen2_vl/modeling_qwen2_vl.py (fused qkv vision attention).
#include "lib/nn/modules.h"

#include <cmath>

#include "lib/core/memory.h"
#include "lib/ops/ops.h"

namespace vlm {

// ---- visitor helpers ----

template <typename T>
NamedParams<T> named_parameters(Module<T>& m, const std::string& prefix) {
  NamedParams<T> out;
  m.visit(prefix, [&out](const std::string& name, TensorT<T>& p) { out.emplace_back(name, p); });
  return out;
}

template <typename T>
int64_t count_parameters(Module<T>& m) {
  int64_t n = 0;
  m.visit("", [&n](const std::string&, TensorT<T>& p) { n += p.numel(); });
  return n;
}

template <typename T>
void zero_grad(Module<T>& m) {
  m.visit("", [](const std::string&, TensorT<T>& p) { p.zero_grad(); });
}

template <typename T>
TensorT<T> param_normal(const Shape& shape, Rng& rng, double stddev) {
  MemCatScope scope(MemCat::kParameters);
  TensorT<T> t = TensorT<T>::randn(shape, rng, stddev);
  t.set_requires_grad(true);
  return t;
}

template <typename T>
TensorT<T> param_full(const Shape& shape, T value) {
  MemCatScope scope(MemCat::kParameters);
  TensorT<T> t = TensorT<T>::full(shape, value);
  t.set_requires_grad(true);
  return t;
}

namespace {

template <typename T>
void visit_if(const std::string& name, TensorT<T>& t, const ParamVisitor<T>& v) {
  if (t.defined()) v(name, t);
}

}  // namespace

// ---- Linear ----

template <typename T>
Linear<T>::Linear(int64_t in_features, int64_t out_features, bool with_bias, Rng& rng,
                  double init_std)
    : weight(param_normal<T>({out_features, in_features}, rng, init_std)) {
  VLM_CHECK(in_features > 0 && out_features > 0,
            "Linear: sizes must be positive, got in " << in_features << ", out " << out_features);
  if (with_bias) bias = param_full<T>({out_features}, T(0));
}

template <typename T>
TensorT<T> Linear<T>::forward(const TensorT<T>& x) const {
  return linear(x, weight, bias);
}

template <typename T>
void Linear<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  v(prefix + "weight", weight);
  visit_if(prefix + "bias", bias, v);
}

// ---- norms ----

template <typename T>
LayerNorm<T>::LayerNorm(int64_t dim, double epsilon, bool with_bias)
    : weight(param_full<T>({dim}, T(1))), eps(epsilon) {
  if (with_bias) bias = param_full<T>({dim}, T(0));
}

template <typename T>
TensorT<T> LayerNorm<T>::forward(const TensorT<T>& x) const {
  return layer_norm(x, weight, bias, eps);
}

template <typename T>
void LayerNorm<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  v(prefix + "weight", weight);
  visit_if(prefix + "bias", bias, v);
}

template <typename T>
RMSNorm<T>::RMSNorm(int64_t dim, double epsilon)
    : weight(param_full<T>({dim}, T(1))), eps(epsilon) {}

template <typename T>
TensorT<T> RMSNorm<T>::forward(const TensorT<T>& x) const {
  return rms_norm(x, weight, eps);
}

template <typename T>
void RMSNorm<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  v(prefix + "weight", weight);
}

namespace {

template <typename T>
std::variant<LayerNorm<T>, RMSNorm<T>> make_norm(int64_t dim, const NormConfig& cfg) {
  if (cfg.kind == NormKind::kLayerNorm) return LayerNorm<T>(dim, cfg.eps, cfg.bias);
  return RMSNorm<T>(dim, cfg.eps);
}

}  // namespace

template <typename T>
Norm<T>::Norm(int64_t dim, const NormConfig& cfg) : impl(make_norm<T>(dim, cfg)) {}

template <typename T>
TensorT<T> Norm<T>::forward(const TensorT<T>& x) const {
  return std::visit([&x](const auto& n) { return n.forward(x); }, impl);
}

template <typename T>
void Norm<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  std::visit([&](auto& n) { n.visit(prefix, v); }, impl);
}

// ---- Embedding ----

template <typename T>
Embedding<T>::Embedding(int64_t num_embeddings, int64_t dim, Rng& rng, double init_std)
    : weight(param_normal<T>({num_embeddings, dim}, rng, init_std)) {}

template <typename T>
TensorT<T> Embedding<T>::forward(const std::vector<int64_t>& ids, const Shape& shape) const {
  VLM_CHECK(numel_of(shape) == static_cast<int64_t>(ids.size()),
            "Embedding: " << ids.size() << " ids do not fill shape " << shape_str(shape));
  const int64_t V = weight.dim(0);
  for (const int64_t id : ids) {
    VLM_CHECK(id >= 0 && id < V, "Embedding: id " << id << " out of range [0, " << V << ")");
  }
  Shape out_shape = shape;
  out_shape.push_back(weight.dim(1));
  return reshape(gather_rows(weight, ids), out_shape);  // [N, C] -> [shape..., C]
}

template <typename T>
void Embedding<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  v(prefix + "weight", weight);
}

// ---- MLPs ----

template <typename T>
Mlp<T>::Mlp(const MlpConfig& cfg, Rng& rng)
    : fc1(cfg.hidden_size, cfg.intermediate_size, cfg.bias, rng, cfg.init_std),
      fc2(cfg.intermediate_size, cfg.out_size > 0 ? cfg.out_size : cfg.hidden_size, cfg.bias, rng,
          cfg.fc2_init_std > 0 ? cfg.fc2_init_std : cfg.init_std),
      cfg_(cfg) {
  if (cfg_.out_size == 0) cfg_.out_size = cfg_.hidden_size;
}

template <typename T>
TensorT<T> Mlp<T>::forward(const TensorT<T>& x) const {
  return fc2.forward(apply_act(cfg_.act, fc1.forward(x)));
}

template <typename T>
void Mlp<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  fc1.visit(prefix + cfg_.fc1_name + ".", v);
  fc2.visit(prefix + cfg_.fc2_name + ".", v);
}

template <typename T>
GatedMlp<T>::GatedMlp(const GatedMlpConfig& cfg, Rng& rng)
    : gate_proj(cfg.hidden_size, cfg.intermediate_size, cfg.bias, rng, cfg.init_std),
      up_proj(cfg.hidden_size, cfg.intermediate_size, cfg.bias, rng, cfg.init_std),
      down_proj(cfg.intermediate_size, cfg.hidden_size, cfg.bias, rng, cfg.init_std),
      cfg_(cfg) {}

template <typename T>
TensorT<T> GatedMlp<T>::forward(const TensorT<T>& x) const {
  return down_proj.forward(mul(apply_act(cfg_.act, gate_proj.forward(x)), up_proj.forward(x)));
}

template <typename T>
void GatedMlp<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  gate_proj.visit(prefix + cfg_.gate_name + ".", v);
  up_proj.visit(prefix + cfg_.up_name + ".", v);
  down_proj.visit(prefix + cfg_.down_name + ".", v);
}

namespace {

template <typename T>
std::variant<GatedMlp<T>, Mlp<T>> make_ff(const FeedForwardConfig& cfg, Rng& rng) {
  if (const auto* g = std::get_if<GatedMlpConfig>(&cfg)) return GatedMlp<T>(*g, rng);
  return Mlp<T>(std::get<MlpConfig>(cfg), rng);
}

}  // namespace

template <typename T>
FeedForward<T>::FeedForward(const FeedForwardConfig& cfg, Rng& rng) : impl(make_ff<T>(cfg, rng)) {}

template <typename T>
TensorT<T> FeedForward<T>::forward(const TensorT<T>& x) const {
  return std::visit([&x](const auto& m) { return m.forward(x); }, impl);
}

template <typename T>
void FeedForward<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  std::visit([&](auto& m) { m.visit(prefix, v); }, impl);
}

// ---- Attention ----

namespace {

AttentionConfig resolve(AttentionConfig c) {
  VLM_CHECK(c.hidden_size > 0 && c.num_heads > 0, "attention: hidden_size ("
                                                      << c.hidden_size << ") and num_heads ("
                                                      << c.num_heads << ") must be positive");
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  VLM_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
            "attention: num_heads (" << c.num_heads << ") must be a multiple of num_kv_heads ("
                                     << c.num_kv_heads << ")");
  if (c.head_dim == 0) {
    VLM_CHECK(c.hidden_size % c.num_heads == 0,
              "attention: hidden_size (" << c.hidden_size << ") not divisible by num_heads ("
                                         << c.num_heads << ") and no head_dim given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  VLM_CHECK(c.head_dim > 0, "attention: head_dim must be positive, got " << c.head_dim);
  if (c.kv_input_size == 0) c.kv_input_size = c.hidden_size;
  if (c.scale == 0.0) c.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  if (c.qkv_layout != QkvLayout::kSeparate) {
    VLM_CHECK(c.q_bias == c.k_bias && c.q_bias == c.v_bias,
              "attention: a fused qkv projection has one bias for q, k and v");
    VLM_CHECK(c.kv_input_size == c.hidden_size,
              "attention: a fused qkv projection needs kv_input_size == hidden_size");
  }
  VLM_CHECK(c.qkv_layout != QkvLayout::kFusedPerHead || c.num_kv_heads == c.num_heads,
            "attention: the per-head fused qkv layout needs num_kv_heads == num_heads");
  return c;
}

}  // namespace

template <typename T>
Attention<T>::Attention(const AttentionConfig& cfg, Rng& rng)
    : cfg_(resolve(cfg)),
      o_proj(cfg_.num_heads * cfg_.head_dim, cfg_.hidden_size, cfg_.o_bias, rng,
             cfg_.o_init_std > 0 ? cfg_.o_init_std : cfg_.init_std) {
  const int64_t C = cfg_.hidden_size, D = cfg_.head_dim;
  const int64_t q_out = cfg_.num_heads * D, kv_out = cfg_.num_kv_heads * D;
  if (cfg_.qkv_layout == QkvLayout::kSeparate) {
    q_proj.emplace(C, q_out, cfg_.q_bias, rng, cfg_.init_std);
    k_proj.emplace(cfg_.kv_input_size, kv_out, cfg_.k_bias, rng, cfg_.init_std);
    v_proj.emplace(cfg_.kv_input_size, kv_out, cfg_.v_bias, rng, cfg_.init_std);
  } else {
    qkv.emplace(C, q_out + 2 * kv_out, cfg_.q_bias, rng, cfg_.init_std);
  }
  if (cfg_.qk_norm) {
    q_norm.emplace(D, *cfg_.qk_norm);
    k_norm.emplace(D, *cfg_.qk_norm);
  }
}

template <typename T>
TensorT<T> last_positions(const TensorT<T>& x, int64_t n) {
  const int64_t T_ = x.dim(1);
  return n > 0 && n < T_ ? slice(x, 1, T_ - n, T_) : x;
}

template <typename T>
typename Attention<T>::Qkv Attention<T>::project_self(const TensorT<T>& x, int64_t keep_last) const {
  const int64_t B = x.dim(0), S = x.dim(1), D = cfg_.head_dim;
  const int64_t H = cfg_.num_heads, Hkv = cfg_.num_kv_heads;
  const auto q_rows = [&](const TensorT<T>& y) { return last_positions(y, keep_last); };
  const int64_t Sq = q_rows(x).dim(1);
  switch (cfg_.qkv_layout) {
    case QkvLayout::kSeparate:
      // [B, S, H*D] -> [B, S, H, D]: heads stay in place, attention() reads this layout.
      return {reshape(q_proj->forward(q_rows(x)), {B, Sq, H, D}),
              reshape(k_proj->forward(x), {B, S, Hkv, D}),
              reshape(v_proj->forward(x), {B, S, Hkv, D})};
    case QkvLayout::kFused: {
      const TensorT<T> y = qkv->forward(x);  // [B, S, (H + 2 Hkv) D] = [Q | K | V]
      const int64_t q_end = H * D, k_end = q_end + Hkv * D;
      return {reshape(slice(q_rows(y), 2, 0, q_end), {B, Sq, H, D}),
              reshape(slice(y, 2, q_end, k_end), {B, S, Hkv, D}),
              reshape(slice(y, 2, k_end, k_end + Hkv * D), {B, S, Hkv, D})};
    }
    case QkvLayout::kFusedPerHead: {
      // Persimmon's view(B, S, H, 3, D): each head's slice is [q_h | k_h | v_h].
      const TensorT<T> y = reshape(qkv->forward(x), {B, S, H, 3, D});
      return {reshape(slice(q_rows(y), 3, 0, 1), {B, Sq, H, D}), reshape(slice(y, 3, 1, 2), {B, S, H, D}),
              reshape(slice(y, 3, 2, 3), {B, S, H, D})};
    }
  }
  throw Error("attention: invalid qkv layout");
}

template <typename T>
TensorT<T> Attention<T>::norm_rope(const TensorT<T>& x, const std::optional<Norm<T>>& norm,
                                   const RopeTables<T>* rope) const {
  TensorT<T> y = x;
  if (norm && !cfg_.qk_norm_after_rope) y = norm->forward(y);
  if (rope != nullptr) y = vlm::rope(y, rope->cos, rope->sin);
  if (norm && cfg_.qk_norm_after_rope) y = norm->forward(y);
  return y;
}

template <typename T>
TensorT<T> Attention<T>::output(const TensorT<T>& heads) const {
  // [B, T, H, D] -> [B, T, H*D] -> o_proj
  return o_proj.forward(reshape(heads, {heads.dim(0), heads.dim(1), heads.dim(2) * heads.dim(3)}));
}

template <typename T>
TensorT<T> Attention<T>::forward(const TensorT<T>& x, const RopeTables<T>* rope,
                                 const AttnMask& mask, KvCache<T>* cache, int layer_idx, int64_t keep_last) const {
  VLM_CHECK(x.ndim() == 3 && x.dim(2) == cfg_.hidden_size, "attention: x must be [B, T, "
                                                               << cfg_.hidden_size << "], got "
                                                               << shape_str(x.shape()));
  VLM_CHECK(
      cfg_.kv_input_size == cfg_.hidden_size,
      "attention: self-attention on a module built for a context of width " << cfg_.kv_input_size);
  VLM_CHECK(keep_last >= 0, "attention: keep_last " << keep_last << " < 0");
  const bool prune = keep_last > 0 && keep_last < x.dim(1);
  VLM_CHECK(!prune || (cache == nullptr && mask.allowed.empty() && mask.segments.empty()),
            "attention: keep_last works without a cache and with causal / padding masks only");
  const Qkv p = project_self(x, keep_last);
  RopeTables<T> q_rope;  // the queries' positions: the tables' last keep_last rows (all when 0)
  if (rope != nullptr) q_rope = {last_positions(rope->cos, keep_last), last_positions(rope->sin, keep_last)};
  const TensorT<T> q = norm_rope(p.q, q_norm, rope != nullptr ? &q_rope : nullptr);
  const TensorT<T> k = norm_rope(p.k, k_norm, rope);
  const TensorT<T> out = cache != nullptr ? cache->attend(layer_idx, q, k, p.v, mask, cfg_.scale)
                                          : attention(q, k, p.v, mask, cfg_.scale);
  return output(out);
}

template <typename T>
TensorT<T> Attention<T>::forward_cross(const TensorT<T>& x, const TensorT<T>& context,
                                       const AttnMask& mask) const {
  VLM_CHECK(cfg_.qkv_layout == QkvLayout::kSeparate,
            "attention: cross-attention needs separate q/k/v projections");
  VLM_CHECK(x.ndim() == 3 && x.dim(2) == cfg_.hidden_size, "attention: x must be [B, Tq, "
                                                               << cfg_.hidden_size << "], got "
                                                               << shape_str(x.shape()));
  VLM_CHECK(
      context.ndim() == 3 && context.dim(0) == x.dim(0) && context.dim(2) == cfg_.kv_input_size,
      "attention: context must be [" << x.dim(0) << ", Tk, " << cfg_.kv_input_size << "], got "
                                     << shape_str(context.shape()));
  const int64_t B = x.dim(0), Tq = x.dim(1), Tk = context.dim(1), D = cfg_.head_dim;
  const TensorT<T> q =
      norm_rope(reshape(q_proj->forward(x), {B, Tq, cfg_.num_heads, D}), q_norm, nullptr);
  const TensorT<T> k =
      norm_rope(reshape(k_proj->forward(context), {B, Tk, cfg_.num_kv_heads, D}), k_norm, nullptr);
  const TensorT<T> v = reshape(v_proj->forward(context), {B, Tk, cfg_.num_kv_heads, D});
  return output(attention(q, k, v, mask, cfg_.scale));
}

template <typename T>
void Attention<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  if (q_proj) q_proj->visit(prefix + cfg_.q_name + ".", v);
  if (k_proj) k_proj->visit(prefix + cfg_.k_name + ".", v);
  if (v_proj) v_proj->visit(prefix + cfg_.v_name + ".", v);
  if (qkv) qkv->visit(prefix + cfg_.qkv_name + ".", v);
  o_proj.visit(prefix + cfg_.o_name + ".", v);
  if (q_norm) q_norm->visit(prefix + cfg_.q_norm_name + ".", v);
  if (k_norm) k_norm->visit(prefix + cfg_.k_norm_name + ".", v);
}

// ---- blocks ----

namespace {

int64_t ff_width(const FeedForwardConfig& cfg) {
  if (const auto* g = std::get_if<GatedMlpConfig>(&cfg)) return g->hidden_size;
  const auto& m = std::get<MlpConfig>(cfg);
  VLM_CHECK(m.out_size == 0 || m.out_size == m.hidden_size,
            "decoder block: the mlp must map hidden_size to itself, got out_size " << m.out_size);
  return m.hidden_size;
}

const DecoderBlockConfig& checked(const DecoderBlockConfig& cfg) {
  VLM_CHECK(ff_width(cfg.mlp) == cfg.attn.hidden_size, "decoder block: mlp hidden_size ("
                                                           << ff_width(cfg.mlp)
                                                           << ") != attention hidden_size ("
                                                           << cfg.attn.hidden_size << ")");
  return cfg;
}

}  // namespace

template <typename T>
DecoderBlock<T>::DecoderBlock(const DecoderBlockConfig& cfg, Rng& rng)
    : input_layernorm(checked(cfg).attn.hidden_size, cfg.norm),
      self_attn(cfg.attn, rng),
      post_attention_layernorm(cfg.attn.hidden_size, cfg.norm),
      mlp(cfg.mlp, rng),
      cfg_(cfg) {}

template <typename T>
TensorT<T> DecoderBlock<T>::forward(const TensorT<T>& x, const RopeTables<T>* rope,
                                    const AttnMask& mask, KvCache<T>* cache, int layer_idx, int64_t keep_last) const {
  const TensorT<T> a = self_attn.forward(input_layernorm.forward(x), rope, mask, cache, layer_idx, keep_last);
  const TensorT<T> h = add(last_positions(x, keep_last), a);
  return add(h, mlp.forward(post_attention_layernorm.forward(h)));
}

template <typename T>
void DecoderBlock<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  // HF registration order: self_attn, mlp, input_layernorm, post_attention_layernorm.
  self_attn.visit(prefix + cfg_.attn_name + ".", v);
  mlp.visit(prefix + cfg_.mlp_name + ".", v);
  input_layernorm.visit(prefix + cfg_.norm1_name + ".", v);
  post_attention_layernorm.visit(prefix + cfg_.norm2_name + ".", v);
}

namespace {

AttentionConfig vit_attention(const VitBlockConfig& c) {
  AttentionConfig a;
  a.hidden_size = c.hidden_size;
  a.num_heads = c.num_heads;
  a.q_bias = a.k_bias = a.v_bias = a.o_bias = true;
  a.qkv_layout = c.qkv_layout;
  a.o_name = c.o_name;
  a.qkv_name = c.qkv_name;
  a.init_std = c.qkv_init_std > 0 ? c.qkv_init_std : c.init_std;
  a.o_init_std = c.o_init_std > 0 ? c.o_init_std : c.init_std;
  return a;
}

MlpConfig vit_mlp(const VitBlockConfig& c) {
  MlpConfig m;
  m.hidden_size = c.hidden_size;
  m.intermediate_size = c.intermediate_size;
  m.act = c.act;
  m.bias = true;
  m.init_std = c.fc1_init_std > 0 ? c.fc1_init_std : c.init_std;
  m.fc2_init_std = c.fc2_init_std > 0 ? c.fc2_init_std : c.init_std;
  return m;
}

}  // namespace

template <typename T>
VitBlock<T>::VitBlock(const VitBlockConfig& cfg, Rng& rng)
    : layer_norm1(cfg.hidden_size, cfg.eps),
      self_attn(vit_attention(cfg), rng),
      layer_norm2(cfg.hidden_size, cfg.eps),
      mlp(vit_mlp(cfg), rng),
      cfg_(cfg) {}

template <typename T>
TensorT<T> VitBlock<T>::forward(const TensorT<T>& x, const AttnMask& mask,
                                const RopeTables<T>* rope) const {
  const TensorT<T> h = add(x, self_attn.forward(layer_norm1.forward(x), rope, mask));
  return add(h, mlp.forward(layer_norm2.forward(h)));
}

template <typename T>
void VitBlock<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  // HF CLIPEncoderLayer registration order: self_attn, layer_norm1, mlp, layer_norm2.
  self_attn.visit(prefix + cfg_.attn_name + ".", v);
  layer_norm1.visit(prefix + cfg_.norm1_name + ".", v);
  mlp.visit(prefix + cfg_.mlp_name + ".", v);
  layer_norm2.visit(prefix + cfg_.norm2_name + ".", v);
}

#define VLM_INSTANTIATE_MODULES(T)                                          \
  template NamedParams<T> named_parameters(Module<T>&, const std::string&); \
  template int64_t count_parameters(Module<T>&);                            \
  template void zero_grad(Module<T>&);                                      \
  template TensorT<T> param_normal<T>(const Shape&, Rng&, double);          \
  template TensorT<T> param_full<T>(const Shape&, T);                       \
  template TensorT<T> last_positions<T>(const TensorT<T>&, int64_t);        \
  template class Module<T>;                                                 \
  template class Linear<T>;                                                 \
  template class LayerNorm<T>;                                              \
  template class RMSNorm<T>;                                                \
  template class Norm<T>;                                                   \
  template class Embedding<T>;                                              \
  template class Mlp<T>;                                                    \
  template class GatedMlp<T>;                                               \
  template class FeedForward<T>;                                            \
  template class Attention<T>;                                              \
  template class DecoderBlock<T>;                                           \
  template class VitBlock<T>;

VLM_INSTANTIATE_MODULES(float)
VLM_INSTANTIATE_MODULES(double)
#undef VLM_INSTANTIATE_MODULES

}  // namespace vlm
