// A CLIP-style ViT vision tower (HF CLIPVisionModel's math and parameter names): a bias-free patch
// "conv" done as a matmul, a learned class token, learned absolute positions, pre_layrnorm, pre-norm
// ViT blocks (VitBlock), and post_layernorm (for the pooled CLS only; never applied to the hidden
// states). Spec: docs/architectures.md §1.2. Ref: transformers models/clip/modeling_clip.py.
//
// Parameter names (leaf names under the caller's prefix, as HF writes them):
//   embeddings.class_embedding              [E]
//   embeddings.patch_embedding.weight       [E, C, p, p]   (Conv2d, no bias)
//   embeddings.position_embedding.weight    [1 + N, E]     (N = (image_size / p)^2)
//   pre_layrnorm.{weight,bias}              [E]            (sic)
//   encoder.layers.i.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}.*
//   post_layernorm.{weight,bias}            [E]
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lib/nn/activation.h"
#include "lib/nn/modules.h"

namespace vlm {

struct ClipVisionConfig {
  int64_t hidden_size = 0;        // E
  int64_t intermediate_size = 0;  // MLP width
  int num_layers = 0;
  int64_t num_heads = 0;
  int64_t patch_size = 0;   // p
  int64_t image_size = 0;   // square input side; the grid is image_size / p (floor, as Conv2d)
  int64_t num_channels = 3;  // C
  Act act = Act::kQuickGelu;  // CLIP's default hidden_act
  double layer_norm_eps = 1e-5;
  // Initialisation (nothing here changes the forward). kClip is CLIPPreTrainedModel._init_weights:
  // patch and position N(0, initializer_range·f), class N(0, E^-1/2·f), q/k/v and fc2
  // N(0, E^-1/2·(2L)^-1/2·f), out_proj N(0, E^-1/2·f), fc1 N(0, (2E)^-1/2·f). kUniform
  // draws every matrix from N(0, initializer_range) and the class token from N(0, class_std).
  enum class Init { kClip, kUniform } init = Init::kClip;
  double initializer_range = kDefaultInitStd;
  double initializer_factor = 1.0;  // f (kClip)
  double class_std = 1.0;           // kUniform
};

template <typename T>
class ClipVisionTower : public Module<T> {
 public:
  ClipVisionTower(const ClipVisionConfig& cfg, Rng& rng);

  // pixel_values [N_img, C, H, W] with H == W == image_size -> every hidden state, each
  // [N_img, 1 + N, E] (token 0 is CLS, then the patch grid in row-major order):
  //   [0] = embeddings after pre_layrnorm, [i] = output of encoder layer i (1-based).
  // post_layernorm is not applied. `num_layers_to_run` (-1 = all) stops early: the result then
  // holds num_layers_to_run + 1 states (a caller that needs only hidden_states[k] runs k layers).
  std::vector<TensorT<T>> forward(const TensorT<T>& pixel_values, int num_layers_to_run = -1) const;
  // hidden_states[0]: patch embedding, CLS, positions, pre_layrnorm -> [N_img, 1 + N, E].
  TensorT<T> embed(const TensorT<T>& pixel_values) const;
  // The patch embedding alone: [N_img, C, H, W] -> [N_img, N, E] (rows in (c, py, px) order times
  // the weight viewed [E, C*p*p]).
  TensorT<T> patch_embed(const TensorT<T>& pixel_values) const;
  // post_layernorm(x), e.g. of the CLS token (HF pooler_output).
  TensorT<T> post_norm(const TensorT<T>& x) const { return post_layernorm.forward(x); }

  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  const ClipVisionConfig& config() const { return cfg_; }
  int64_t grid_size() const { return cfg_.image_size / cfg_.patch_size; }  // patches per side
  int64_t num_patches() const { return grid_size() * grid_size(); }       // N
  int64_t num_positions() const { return num_patches() + 1; }             // 1 + N (CLS first)

  TensorT<T> class_embedding;     // [E]
  TensorT<T> patch_weight;        // embeddings.patch_embedding.weight [E, C, p, p]
  TensorT<T> position_embedding;  // embeddings.position_embedding.weight [1 + N, E]
  LayerNorm<T> pre_layrnorm;
  std::vector<std::unique_ptr<VitBlock<T>>> layers;  // encoder.layers.i
  LayerNorm<T> post_layernorm;

 private:
  ClipVisionConfig cfg_;
};

using ClipVision = ClipVisionTower<float>;

}  // namespace vlm
