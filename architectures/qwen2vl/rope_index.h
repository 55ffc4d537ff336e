// Qwen2-VL's 3-D M-RoPE positions (t, h, w) as transformers 5.17 computes them
// (Qwen2VLModel.get_rope_index), from the processor's mm_token_type_ids.
#pragma once

#include <cstdint>
#include <vector>

namespace vlm::qwen2vl {

// (t, h, w) of one image or video in patches, before merging (a row of image_grid_thw /
// video_grid_thw; for videos t counts temporal groups).
struct Grid {
  int64_t t = 0, h = 0, w = 0;
  int64_t patches() const { return t * h * w; }
};

struct RopeIndex {
  std::vector<int64_t> position_ids;  // [3, B, T]; padded slots are 0
  // Per row: max position + 1, where decoding continues on all three axes (HF's
  // cumsum(attention_mask) - 1 + rope_delta for the first new token).
  std::vector<int64_t> next_position;
  // HF's mrope_position_deltas: max + 1 - (number of unpadded tokens of the row).
  std::vector<int64_t> rope_deltas;
};

// mm_token_type_ids [B, T]: 0 text, 1 image, 2 video. attention_mask [B, T] or empty (all real).
// Per row, over its unpadded tokens, runs of equal type are laid out in order:
//  - a text run of length L takes cur .. cur+L-1 on all three axes, then cur += L;
//  - an image/video run takes the next grid of its kind (one running order over the whole
//    batch), with h' = h/merge, w' = w/merge: in (t, h', w') order the token gets
//    (cur + t_i, cur + h_i, cur + w_i); then cur += max(h', w') (the spatial extent only).
// Throws vlm::Error when a run has no grid left, or its length is not t·h'·w'.
RopeIndex get_rope_index(const std::vector<int64_t>& mm_token_type_ids, int64_t B, int64_t T,
                         const std::vector<Grid>& image_grids, const std::vector<Grid>& video_grids,
                         const std::vector<int64_t>& attention_mask, int64_t spatial_merge_size);

}  // namespace vlm::qwen2vl
