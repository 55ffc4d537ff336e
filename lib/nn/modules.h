// HF-named building blocks: Linear, norms, Embedding, MLPs, attention and the two pre-norm
// residual blocks. Every module lists its parameters through visit() under HF state-dict leaf
// names, so nesting prefixes gives a model's full HF names (loading, saving, counting, optimizing).
// Spec: docs/architectures.md §0, §1.2, §1.5. Shapes: B batch, T sequence, C channels,
// H heads, D head dim, V vocabulary. Templated on T: float for models, double for gradient checks.
// Copying a module copies tensor handles: the copy shares its parameters with the original.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "lib/core/random.h"
#include "lib/core/tensor.h"
#include "lib/nn/activation.h"
#include "lib/ops/attention.h"
#include "lib/ops/rope.h"

namespace vlm {

// Receives every parameter: its full name and the tensor handle (a loader may replace it).
template <typename T>
using ParamVisitor = std::function<void(const std::string& name, TensorT<T>& param)>;

template <typename T>
class Module {
 public:
  virtual ~Module() = default;
  // Calls v(prefix + leaf, tensor) for every parameter (undefined optional ones are skipped).
  virtual void visit(const std::string& prefix, const ParamVisitor<T>& v) = 0;

 protected:
  Module() = default;
  Module(const Module&) = default;
  Module(Module&&) noexcept = default;
  Module& operator=(const Module&) = default;
  Module& operator=(Module&&) noexcept = default;
};

template <typename T>
using NamedParams = std::vector<std::pair<std::string, TensorT<T>>>;

// (full name, tensor) in visit order; the tensors are handles to the module's own parameters.
template <typename T>
NamedParams<T> named_parameters(Module<T>& m, const std::string& prefix = "");
template <typename T>
int64_t count_parameters(Module<T>& m);
template <typename T>
void zero_grad(Module<T>& m);

inline constexpr double kDefaultInitStd = 0.02;  // HF initializer_range

// Parameter factories: data counted under MemCat::kParameters, requires_grad on.
template <typename T>
TensorT<T> param_normal(const Shape& shape, Rng& rng, double stddev);
template <typename T>
TensorT<T> param_full(const Shape& shape, T value);

// y = x Wᵀ + b; weight [out, in] (HF layout), bias [out] or none. Init: N(0, init_std), bias 0.
template <typename T>
class Linear : public Module<T> {
 public:
  Linear(int64_t in_features, int64_t out_features, bool with_bias, Rng& rng,
         double init_std = kDefaultInitStd);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  int64_t in_features() const { return weight.dim(1); }
  int64_t out_features() const { return weight.dim(0); }

  TensorT<T> weight;
  TensorT<T> bias;
};

// Over the last axis, biased variance; weight ones, bias zeros (bias optional).
template <typename T>
class LayerNorm : public Module<T> {
 public:
  explicit LayerNorm(int64_t dim, double epsilon = 1e-5, bool with_bias = true);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;

  TensorT<T> weight;
  TensorT<T> bias;
  double eps;
};

// x * rsqrt(mean(x²) + eps) * weight, as in Llama; weight ones.
template <typename T>
class RMSNorm : public Module<T> {
 public:
  explicit RMSNorm(int64_t dim, double epsilon = 1e-6);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;

  TensorT<T> weight;
  double eps;
};

enum class NormKind { kLayerNorm, kRmsNorm };
struct NormConfig {
  NormKind kind = NormKind::kRmsNorm;
  double eps = 1e-6;
  bool bias = true;  // LayerNorm only
};

// A norm whose kind is chosen by config (blocks and q/k norms).
template <typename T>
class Norm : public Module<T> {
 public:
  Norm(int64_t dim, const NormConfig& cfg);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;

  std::variant<LayerNorm<T>, RMSNorm<T>> impl;
};

// weight [V, C], init N(0, init_std).
template <typename T>
class Embedding : public Module<T> {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Rng& rng, double init_std = kDefaultInitStd);
  // ids laid out as `shape` (numel(shape) == ids.size()) -> [shape..., C].
  TensorT<T> forward(const std::vector<int64_t>& ids, const Shape& shape) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;

  TensorT<T> weight;
};

// fc2(act(fc1(x))): ViT MLPs (fc1/fc2), Persimmon (dense_h_to_4h/dense_4h_to_h), projectors
// (linear_1/linear_2, out_size = text width).
struct MlpConfig {
  int64_t hidden_size = 0;  // input width
  int64_t intermediate_size = 0;
  int64_t out_size = 0;  // output width; 0 = hidden_size
  Act act = Act::kGeluErf;
  bool bias = true;
  std::string fc1_name = "fc1";
  std::string fc2_name = "fc2";
  double init_std = kDefaultInitStd;  // fc1 (and fc2 unless fc2_init_std is set)
  double fc2_init_std = 0.0;          // 0 = init_std
};

template <typename T>
class Mlp : public Module<T> {
 public:
  Mlp(const MlpConfig& cfg, Rng& rng);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  const MlpConfig& config() const { return cfg_; }

  Linear<T> fc1;
  Linear<T> fc2;

 private:
  MlpConfig cfg_;
};

// down_proj(act(gate_proj(x)) * up_proj(x)): SwiGLU with silu (as in Llama), GeGLU with gelu.
struct GatedMlpConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  Act act = Act::kSilu;
  bool bias = false;  // HF mlp_bias
  std::string gate_name = "gate_proj";
  std::string up_name = "up_proj";
  std::string down_name = "down_proj";
  double init_std = kDefaultInitStd;
};

template <typename T>
class GatedMlp : public Module<T> {
 public:
  GatedMlp(const GatedMlpConfig& cfg, Rng& rng);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  const GatedMlpConfig& config() const { return cfg_; }

  Linear<T> gate_proj;
  Linear<T> up_proj;
  Linear<T> down_proj;

 private:
  GatedMlpConfig cfg_;
};

// Either MLP, chosen by config (the decoder block's feed-forward).
using FeedForwardConfig = std::variant<GatedMlpConfig, MlpConfig>;
template <typename T>
class FeedForward : public Module<T> {
 public:
  FeedForward(const FeedForwardConfig& cfg, Rng& rng);
  TensorT<T> forward(const TensorT<T>& x) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;

  std::variant<GatedMlp<T>, Mlp<T>> impl;
};

// x [B, T, ...] -> its last n positions [B, n, ...]; x itself when n <= 0 or n >= T (keep_last's
// "every position").
template <typename T>
TensorT<T> last_positions(const TensorT<T>& x, int64_t n);

// How q, k and v are projected.
enum class QkvLayout {
  kSeparate,  // q_proj, k_proj, v_proj
  kFused,     // one Linear whose output is [Q all heads | K | V] (as in Qwen2-VL's vision "qkv")
  kFusedPerHead,  // one Linear whose output is per head [q_h | k_h | v_h] (as in Persimmon)
};

struct AttentionConfig {
  int64_t hidden_size = 0;    // width of x and of the output
  int64_t kv_input_size = 0;  // cross-attention context width; 0 = hidden_size
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // 0 = num_heads (GQA when fewer)
  int64_t head_dim = 0;      // 0 = hidden_size / num_heads
  bool q_bias = false;       // fused layouts: q_bias is the fused projection's bias
  bool k_bias = false;
  bool v_bias = false;
  bool o_bias = false;
  std::optional<NormConfig> qk_norm;  // per-head norm over head_dim of q and k
  // Before RoPE as in Persimmon; after (set true) as in HF IdeficsAttention.
  bool qk_norm_after_rope = false;
  double scale = 0.0;  // 0 = head_dim^-0.5
  QkvLayout qkv_layout = QkvLayout::kSeparate;
  std::string q_name = "q_proj";
  std::string k_name = "k_proj";
  std::string v_name = "v_proj";
  std::string o_name = "o_proj";
  std::string qkv_name = "qkv";  // fused layouts
  std::string q_norm_name = "q_norm";
  std::string k_norm_name = "k_norm";
  double init_std = kDefaultInitStd;  // q, k, v (and o unless o_init_std is set)
  double o_init_std = 0.0;            // 0 = init_std
};

template <typename T>
class Attention : public Module<T> {
  AttentionConfig cfg_;  // first: the members below are built from the resolved config

 public:
  Attention(const AttentionConfig& cfg, Rng& rng);
  // Self-attention, x [B, T, C] -> [B, T, C]. rope: tables for these T positions (nullptr: none).
  // With a cache, k/v are appended to layer `layer_idx` and `mask` is sized for the cached length.
  // keep_last > 0 (no cache): only the last keep_last positions' outputs, [B, keep_last, C]: every
  // position's key and value, queries for those positions only (the same numbers as the tail of
  // the full output, without the other rows' queries, scores and output projection).
  TensorT<T> forward(const TensorT<T>& x, const RopeTables<T>* rope, const AttnMask& mask,
                     KvCache<T>* cache = nullptr, int layer_idx = 0, int64_t keep_last = 0) const;
  // Cross-attention: x [B, Tq, C] attends context [B, Tk, kv_input_size]; no RoPE.
  TensorT<T> forward_cross(const TensorT<T>& x, const TensorT<T>& context,
                           const AttnMask& mask) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  // The config with every default resolved (num_kv_heads, head_dim, kv_input_size, scale).
  const AttentionConfig& config() const { return cfg_; }

  std::optional<Linear<T>> q_proj, k_proj, v_proj;  // kSeparate
  std::optional<Linear<T>> qkv;                     // fused layouts
  Linear<T> o_proj;
  std::optional<Norm<T>> q_norm, k_norm;

 private:
  struct Qkv {
    TensorT<T> q, k, v;  // [B, T, H, D]
  };
  // q for the last keep_last positions only (0: all); k, v for all.
  Qkv project_self(const TensorT<T>& x, int64_t keep_last = 0) const;
  TensorT<T> norm_rope(const TensorT<T>& x, const std::optional<Norm<T>>& norm,
                       const RopeTables<T>* rope) const;
  TensorT<T> output(const TensorT<T>& heads) const;
};

// Pre-norm decoder layer, as in Llama / Qwen2 / Persimmon:
//   h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
struct DecoderBlockConfig {
  AttentionConfig attn;
  FeedForwardConfig mlp = GatedMlpConfig{};
  NormConfig norm;  // both norms; default RMSNorm eps 1e-6 as in Llama
  std::string attn_name = "self_attn";
  std::string mlp_name = "mlp";
  std::string norm1_name = "input_layernorm";
  std::string norm2_name = "post_attention_layernorm";
};

template <typename T>
class DecoderBlock : public Module<T> {
 public:
  DecoderBlock(const DecoderBlockConfig& cfg, Rng& rng);
  // x [B, T, C]; arguments as Attention::forward (keep_last > 0: [B, keep_last, C], the last
  // positions' outputs, the feed-forward run on those rows only).
  TensorT<T> forward(const TensorT<T>& x, const RopeTables<T>* rope, const AttnMask& mask,
                     KvCache<T>* cache = nullptr, int layer_idx = 0, int64_t keep_last = 0) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  const DecoderBlockConfig& config() const { return cfg_; }

  Norm<T> input_layernorm;
  Attention<T> self_attn;
  Norm<T> post_attention_layernorm;
  FeedForward<T> mlp;

 private:
  DecoderBlockConfig cfg_;
};

// Pre-norm ViT encoder layer, as in CLIP: LayerNorm, all projections with bias, no mask and no
// RoPE by default: h = x + self_attn(layer_norm1(x)); out = h + mlp(layer_norm2(h)).
struct VitBlockConfig {
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  Act act = Act::kQuickGelu;
  double eps = 1e-5;  // layer_norm_eps
  QkvLayout qkv_layout = QkvLayout::kSeparate;
  std::string norm1_name = "layer_norm1";
  std::string norm2_name = "layer_norm2";
  std::string attn_name = "self_attn";
  std::string mlp_name = "mlp";
  std::string o_name = "out_proj";
  std::string qkv_name = "qkv";  // fused layouts
  // N(0, std) per projection; 0 = init_std. HF CLIP scales each one differently (see ClipInit).
  double init_std = kDefaultInitStd;
  double qkv_init_std = 0.0, o_init_std = 0.0, fc1_init_std = 0.0, fc2_init_std = 0.0;
};

template <typename T>
class VitBlock : public Module<T> {
 public:
  VitBlock(const VitBlockConfig& cfg, Rng& rng);
  // x [B, T, C]; mask e.g. block-diagonal per image; rope e.g. 2-D vision tables.
  TensorT<T> forward(const TensorT<T>& x, const AttnMask& mask = {},
                     const RopeTables<T>* rope = nullptr) const;
  void visit(const std::string& prefix, const ParamVisitor<T>& v) override;
  const VitBlockConfig& config() const { return cfg_; }

  LayerNorm<T> layer_norm1;
  Attention<T> self_attn;
  LayerNorm<T> layer_norm2;
  Mlp<T> mlp;

 private:
  VitBlockConfig cfg_;
};

}  // namespace vlm
