// Qwen2-VL vision tower (HF Qwen2VisionTransformerPretrainedModel): patch embedding as a matmul,
// pre-LN ViT blocks with 2-D rotary positions and attention block-diagonal per image and per
// temporal group, then the PatchMerger (m×m windows -> one text-width token).
// Spec: docs/architectures.md §3.3.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "architectures/qwen2vl/rope_index.h"
#include "lib/nn/modules.h"

namespace vlm::qwen2vl {

struct VisionConfig {
  int64_t embed_dim = 1280;
  int depth = 32;
  int64_t num_heads = 16;
  int64_t mlp_hidden = 5120;  // int(embed_dim * mlp_ratio)
  Act act = Act::kQuickGelu;
  int64_t patch_size = 14;
  int64_t temporal_patch_size = 2;
  int64_t spatial_merge_size = 2;
  int64_t in_channels = 3;
  int64_t out_hidden = 3584;  // merger output = text width (vision_config.hidden_size)
  double rope_theta = 10000.0;
  double init_std = 0.02;  // vision_config.initializer_range: every matrix of the tower and merger

  int64_t head_dim() const { return embed_dim / num_heads; }
  int64_t patch_dim() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
};

class VisionTower : public Module<float> {
 public:
  VisionTower(const VisionConfig& cfg, Rng& rng);

  struct Output {
    Tensor hidden;  // [N, E]: after the last block, before the merger (rows in merge-window order)
    Tensor merged;  // [N / m², out_hidden]: the merger output
  };
  // pixels [N, C·Tp·p·p] (processor layout: rows by grid, temporal group, merge window; columns
  // (c, t, py, px)); grids: (t, h, w) per image/video, N = Σ t·h·w.
  Output forward(const Tensor& pixels, const std::vector<Grid>& grids) const;

  // HF names under prefix: patch_embed.proj.weight, blocks.i.{norm1, norm2, attn.qkv, attn.proj,
  // mlp.fc1, mlp.fc2}, merger.{ln_q, mlp.0, mlp.2}.
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override;
  const VisionConfig& config() const { return cfg_; }

  Tensor patch_weight;  // [E, C, Tp, p, p] (Conv3d with kernel = stride, no bias)
  std::vector<std::unique_ptr<VitBlock<float>>> blocks;
  LayerNorm<float> ln_q;
  Linear<float> merger_fc1;  // merger.mlp.0
  Linear<float> merger_fc2;  // merger.mlp.2

 private:
  VisionConfig cfg_;
};

}  // namespace vlm::qwen2vl
