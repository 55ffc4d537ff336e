// Rotary position embeddings, rotate-half (NeoX) layout, as every HF model here uses: dim i pairs
// with i + R/2 over the first R ("rotary") dims of each head; the rest pass through (partial rotary).
// One mechanism covers 1-D RoPE, Qwen2-VL's M-RoPE and its 2-D vision RoPE: every frequency index
// j < R/2 reads the position of one axis and has one inverse frequency; the angle table is
// cat(angles, angles) exactly as HF's `emb = cat(freqs, freqs)`. Angles are computed in fp32 as HF does.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/core/tensor.h"

namespace vlm {

template <typename T>
struct RopeTables {
  TensorT<T> cos, sin;  // [Bc, T, R], Bc = 1 (shared over the batch) or B
};

// inv_freq[j] = 1 / theta^(2j / dim) for j < dim/2, in fp32 as HF computes it.
std::vector<float> rope_inv_freq(int64_t dim, double theta);

// General table: positions [A, Bc, T] (A position axes); for j < R/2 the angle is
// positions[axis_of[j]][b][t] * inv_freq[j]; R = 2 * inv_freq.size().
template <typename T>
RopeTables<T> rope_tables(const std::vector<int64_t>& positions, int64_t A, int64_t Bc, int64_t T_,
                          const std::vector<int>& axis_of, const std::vector<float>& inv_freq);

// 1-D RoPE over the first rot_dim dims: positions [Bc, T].
template <typename T>
RopeTables<T> rope_tables_1d(const std::vector<int64_t>& positions, int64_t Bc, int64_t T_, int64_t rot_dim,
                             double theta);
// Qwen2-VL M-RoPE: positions [3, B, T] (t, h, w); mrope_section sums to head_dim/2; frequency chunk i
// of mrope_section reads axis i.
template <typename T>
RopeTables<T> mrope_tables(const std::vector<int64_t>& positions, int64_t B, int64_t T_, int64_t head_dim,
                           const std::vector<int64_t>& mrope_section, double theta);
// Qwen2-VL vision 2-D RoPE: per token (h, w) positions [N]; rotary over the whole head_dim with
// inv_freq over head_dim/2: angles = [h·inv (hd/4) | w·inv (hd/4)], table shape [1, N, hd].
template <typename T>
RopeTables<T> vision_rope_tables(const std::vector<int64_t>& hpos, const std::vector<int64_t>& wpos,
                                 int64_t head_dim, double theta);

// x [B, T, H, D]; cos/sin [Bc, T, R] with R <= D, R even. out = x*cos + rotate_half(x)*sin on the
// first R dims.
template <typename T>
TensorT<T> rope(const TensorT<T>& x, const TensorT<T>& cos, const TensorT<T>& sin);

}  // namespace vlm
