#include "architectures/qwen2vl/vision.h"

#include <optional>

#include "lib/measure/phase.h"
#include "lib/ops/ops.h"

namespace vlm::qwen2vl {

namespace {

VitBlockConfig block_config(const VisionConfig& c) {
  VitBlockConfig b;
  b.hidden_size = c.embed_dim;
  b.num_heads = c.num_heads;
  b.intermediate_size = c.mlp_hidden;
  b.act = c.act;
  b.eps = 1e-6;  // hard-coded in Qwen2VLVisionBlock
  b.qkv_layout = QkvLayout::kFused;  // qkv(x).reshape(S, 3, H, hd): [Q all | K all | V all]
  b.norm1_name = "norm1";
  b.norm2_name = "norm2";
  b.attn_name = "attn";
  b.mlp_name = "mlp";
  b.o_name = "proj";
  b.qkv_name = "qkv";
  b.init_std = c.init_std;
  return b;
}

}  // namespace

VisionTower::VisionTower(const VisionConfig& cfg, Rng& rng)
    : patch_weight(param_normal<float>({cfg.embed_dim, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size,
                                        cfg.patch_size},
                                       rng, cfg.init_std)),
      ln_q(cfg.embed_dim, 1e-6),
      merger_fc1(cfg.embed_dim * cfg.spatial_merge_size * cfg.spatial_merge_size,
                 cfg.embed_dim * cfg.spatial_merge_size * cfg.spatial_merge_size, true, rng, cfg.init_std),
      merger_fc2(cfg.embed_dim * cfg.spatial_merge_size * cfg.spatial_merge_size, cfg.out_hidden, true, rng,
                 cfg.init_std),
      cfg_(cfg) {
  const VitBlockConfig bc = block_config(cfg);
  for (int i = 0; i < cfg.depth; ++i) blocks.push_back(std::make_unique<VitBlock<float>>(bc, rng));
}

VisionTower::Output VisionTower::forward(const Tensor& pixels, const std::vector<Grid>& grids) const {
  const int64_t E = cfg_.embed_dim, m = cfg_.spatial_merge_size, K = cfg_.patch_dim();
  VLM_CHECK(pixels.ndim() == 2 && pixels.dim(1) == K,
            "qwen2vl vision: pixel rows must be [N, C*Tp*p*p] = [N, " << K << "], got " << shape_str(pixels.shape()));

  // 2-D rotary positions in the rows' merge-window order: per grid and temporal group, windows
  // row-major, then the m×m patches of a window row-major. Attention blocks: one per (grid, t).
  std::vector<int64_t> hpos, wpos, segments;
  for (const Grid& g : grids) {
    VLM_CHECK(g.t > 0 && g.h > 0 && g.w > 0 && g.h % m == 0 && g.w % m == 0,
              "qwen2vl vision: grid (" << g.t << ", " << g.h << ", " << g.w
                                       << ") must be positive with h and w multiples of spatial_merge_size " << m);
    for (int64_t t = 0; t < g.t; ++t) {
      for (int64_t bh = 0; bh < g.h / m; ++bh)
        for (int64_t bw = 0; bw < g.w / m; ++bw)
          for (int64_t ih = 0; ih < m; ++ih)
            for (int64_t iw = 0; iw < m; ++iw) {
              hpos.push_back(bh * m + ih);
              wpos.push_back(bw * m + iw);
            }
      segments.push_back(g.h * g.w);
    }
  }
  const auto N = static_cast<int64_t>(hpos.size());
  VLM_CHECK(pixels.dim(0) == N, "qwen2vl vision: " << pixels.dim(0) << " pixel rows, but the grids hold " << N
                                                   << " patches");

  std::optional<PhaseScope> phase(std::in_place, "vision");
  // Conv3d with kernel = stride = the whole patch is one matmul with the weight viewed [E, K].
  Tensor x = reshape(linear(pixels, reshape(patch_weight, {E, K}), Tensor()), {1, N, E});
  const RopeTables<float> rope = vision_rope_tables<float>(hpos, wpos, cfg_.head_dim(), cfg_.rope_theta);
  const AttnMask mask = segments.size() > 1 ? block_diagonal_mask(segments) : AttnMask{};
  for (const auto& blk : blocks) x = blk->forward(x, mask, &rope);

  Output out;
  out.hidden = reshape(x, {N, E});
  phase.reset();
  const PhaseScope connector("connector");
  const Tensor windows = reshape(ln_q.forward(out.hidden), {N / (m * m), E * m * m});
  out.merged = merger_fc2.forward(gelu(merger_fc1.forward(windows)));  // nn.GELU(): erf
  return out;
}

void VisionTower::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  v(prefix + "patch_embed.proj.weight", patch_weight);
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i]->visit(prefix + "blocks." + std::to_string(i) + ".", v);
  ln_q.visit(prefix + "merger.ln_q.", v);
  merger_fc1.visit(prefix + "merger.mlp.0.", v);
  merger_fc2.visit(prefix + "merger.mlp.2.", v);
}

}  // namespace vlm::qwen2vl
