// Ref: transformers models/clip/modeling_clip.py (CLIPVisionEmbeddings, CLIPVisionModel).
#include "lib/nn/clip_vision.h"

#include <algorithm>
#include <cmath>

#include "lib/ops/ops.h"

namespace vlm {

namespace {

const ClipVisionConfig& checked(const ClipVisionConfig& c) {
  VLM_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_heads > 0 && c.num_layers >= 0,
            "CLIP vision: hidden_size (" << c.hidden_size << "), intermediate_size (" << c.intermediate_size
                                         << "), num_heads (" << c.num_heads << ") must be positive, num_layers ("
                                         << c.num_layers << ") >= 0");
  VLM_CHECK(c.patch_size > 0 && c.image_size >= c.patch_size && c.num_channels > 0,
            "CLIP vision: need patch_size > 0, image_size >= patch_size and num_channels > 0, got patch_size "
                << c.patch_size << ", image_size " << c.image_size << ", num_channels " << c.num_channels);
  VLM_CHECK(c.hidden_size % c.num_heads == 0,
            "CLIP vision: hidden_size " << c.hidden_size << " is not divisible by num_heads " << c.num_heads);
  return c;
}

double inv_sqrt(double x) { return 1.0 / std::sqrt(x); }

VitBlockConfig block_config(const ClipVisionConfig& c) {
  VitBlockConfig b;
  b.hidden_size = c.hidden_size;
  b.num_heads = c.num_heads;
  b.intermediate_size = c.intermediate_size;
  b.act = c.act;
  b.eps = c.layer_norm_eps;
  b.init_std = c.initializer_range;
  if (c.init == ClipVisionConfig::Init::kClip) {
    const double E = static_cast<double>(c.hidden_size), f = c.initializer_factor;
    const double in_proj = inv_sqrt(E) * inv_sqrt(2.0 * std::max(1, c.num_layers)) * f;
    b.qkv_init_std = in_proj;
    b.o_init_std = inv_sqrt(E) * f;
    b.fc1_init_std = inv_sqrt(2.0 * E) * f;
    b.fc2_init_std = in_proj;
  }
  return b;
}

double embed_std(const ClipVisionConfig& c) {
  return c.init == ClipVisionConfig::Init::kClip ? c.initializer_range * c.initializer_factor : c.initializer_range;
}

double class_std(const ClipVisionConfig& c) {
  return c.init == ClipVisionConfig::Init::kClip
             ? inv_sqrt(static_cast<double>(c.hidden_size)) * c.initializer_factor
             : c.class_std;
}

}  // namespace

template <typename T>
ClipVisionTower<T>::ClipVisionTower(const ClipVisionConfig& cfg, Rng& rng)
    : class_embedding(param_normal<T>({checked(cfg).hidden_size}, rng, class_std(cfg))),
      patch_weight(param_normal<T>({cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size}, rng,
                                   embed_std(cfg))),
      position_embedding(param_normal<T>(
          {(cfg.image_size / cfg.patch_size) * (cfg.image_size / cfg.patch_size) + 1, cfg.hidden_size}, rng,
          embed_std(cfg))),
      pre_layrnorm(cfg.hidden_size, cfg.layer_norm_eps),
      post_layernorm(cfg.hidden_size, cfg.layer_norm_eps),
      cfg_(cfg) {
  const VitBlockConfig b = block_config(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) layers.push_back(std::make_unique<VitBlock<T>>(b, rng));
}

template <typename T>
TensorT<T> ClipVisionTower<T>::patch_embed(const TensorT<T>& pixel_values) const {
  const int64_t C = cfg_.num_channels, p = cfg_.patch_size, E = cfg_.hidden_size;
  VLM_CHECK(pixel_values.ndim() == 4 && pixel_values.dim(1) == C,
            "CLIP vision: pixel_values must be [N_img, " << C << ", H, W], got " << shape_str(pixel_values.shape()));
  const int64_t n = pixel_values.dim(0), H = pixel_values.dim(2), W = pixel_values.dim(3);
  const int64_t gh = H / p, gw = W / p;
  VLM_CHECK(gh > 0 && gw > 0, "CLIP vision: image " << H << "x" << W << " is smaller than one patch of " << p);
  TensorT<T> x = pixel_values;
  // Conv2d with stride = kernel drops the pixels past the last whole patch.
  if (H != gh * p) x = slice(x, 2, 0, gh * p);
  if (W != gw * p) x = slice(x, 3, 0, gw * p);
  // [n, C, gh, p, gw, p] -> [n, gh, gw, C, p, p] -> rows [n*gh*gw, C*p*p] in (c, py, px) order.
  x = reshape(x, {n, C, gh, p, gw, p});
  x = permute(x, {0, 2, 4, 1, 3, 5});
  x = reshape(x, {n * gh * gw, C * p * p});
  const TensorT<T> w = reshape(patch_weight, {E, C * p * p});
  return reshape(matmul(x, w, false, true), {n, gh * gw, E});
}

template <typename T>
TensorT<T> ClipVisionTower<T>::embed(const TensorT<T>& pixel_values) const {
  VLM_CHECK(pixel_values.ndim() == 4 && pixel_values.dim(2) == cfg_.image_size &&
                pixel_values.dim(3) == cfg_.image_size,
            "CLIP vision: input image size (" << (pixel_values.ndim() == 4 ? pixel_values.dim(2) : -1) << "*"
                                              << (pixel_values.ndim() == 4 ? pixel_values.dim(3) : -1)
                                              << ") doesn't match the model (" << cfg_.image_size << "*"
                                              << cfg_.image_size << "); pixel_values "
                                              << shape_str(pixel_values.shape()));
  const int64_t n = pixel_values.dim(0), E = cfg_.hidden_size;
  const TensorT<T> patches = patch_embed(pixel_values);  // [n, N, E]
  const TensorT<T> cls = broadcast_to(reshape(class_embedding, {1, 1, E}), {n, 1, E});
  const TensorT<T> tokens = concat<T>({cls, patches}, 1);  // [n, 1 + N, E]
  return pre_layrnorm.forward(add(tokens, position_embedding));
}

template <typename T>
std::vector<TensorT<T>> ClipVisionTower<T>::forward(const TensorT<T>& pixel_values, int num_layers_to_run) const {
  const int L = static_cast<int>(layers.size());
  const int run = num_layers_to_run < 0 ? L : num_layers_to_run;
  VLM_CHECK(run <= L, "CLIP vision: asked to run " << run << " layers of " << L);
  std::vector<TensorT<T>> hidden;
  hidden.reserve(static_cast<std::size_t>(run) + 1);
  hidden.push_back(embed(pixel_values));
  for (int i = 0; i < run; ++i) hidden.push_back(layers[static_cast<std::size_t>(i)]->forward(hidden.back()));
  return hidden;
}

template <typename T>
void ClipVisionTower<T>::visit(const std::string& prefix, const ParamVisitor<T>& v) {
  // HF registration order: embeddings (class, patch, position), pre_layrnorm, encoder, post_layernorm.
  v(prefix + "embeddings.class_embedding", class_embedding);
  v(prefix + "embeddings.patch_embedding.weight", patch_weight);
  v(prefix + "embeddings.position_embedding.weight", position_embedding);
  pre_layrnorm.visit(prefix + "pre_layrnorm.", v);
  for (std::size_t i = 0; i < layers.size(); ++i)
    layers[i]->visit(prefix + "encoder.layers." + std::to_string(i) + ".", v);
  post_layernorm.visit(prefix + "post_layernorm.", v);
}

template class ClipVisionTower<float>;
template class ClipVisionTower<double>;

}  // namespace vlm
