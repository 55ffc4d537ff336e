// get_rope_index of transformers 5.17 (models/qwen2_vl/modeling_qwen2_vl.py): runs of
// mm_token_type_ids, one grid iterator per modality shared by the whole batch, and text after a
// vision run resuming at start + max(h', w').
#include "architectures/qwen2vl/rope_index.h"

#include <algorithm>

#include "lib/core/check.h"

namespace vlm::qwen2vl {

RopeIndex get_rope_index(const std::vector<int64_t>& mm_token_type_ids, int64_t B, int64_t T,
                         const std::vector<Grid>& image_grids, const std::vector<Grid>& video_grids,
                         const std::vector<int64_t>& attention_mask, int64_t spatial_merge_size) {
  VLM_CHECK(B >= 0 && T >= 0 && static_cast<int64_t>(mm_token_type_ids.size()) == B * T,
            "qwen2vl get_rope_index: mm_token_type_ids has " << mm_token_type_ids.size()
                                                             << " entries, expected B*T = " << B << "*" << T);
  VLM_CHECK(attention_mask.empty() || static_cast<int64_t>(attention_mask.size()) == B * T,
            "qwen2vl get_rope_index: attention_mask has " << attention_mask.size() << " entries, expected B*T = "
                                                          << B << "*" << T);
  VLM_CHECK(spatial_merge_size > 0, "qwen2vl get_rope_index: spatial_merge_size must be positive");
  const int64_t m = spatial_merge_size;
  RopeIndex r;
  r.position_ids.assign(static_cast<std::size_t>(3 * B * T), 0);
  std::size_t next_image = 0, next_video = 0;  // one running order across the batch

  for (int64_t b = 0; b < B; ++b) {
    // The row's unpadded slots, in order.
    std::vector<int64_t> slots;
    for (int64_t i = 0; i < T; ++i)
      if (attention_mask.empty() || attention_mask[static_cast<std::size_t>(b * T + i)] != 0) slots.push_back(i);
    auto type_at = [&](std::size_t k) { return mm_token_type_ids[static_cast<std::size_t>(b * T + slots[k])]; };
    auto put = [&](std::size_t k, int64_t t, int64_t h, int64_t w) {
      const int64_t i = slots[k];
      r.position_ids[static_cast<std::size_t>((0 * B + b) * T + i)] = t;
      r.position_ids[static_cast<std::size_t>((1 * B + b) * T + i)] = h;
      r.position_ids[static_cast<std::size_t>((2 * B + b) * T + i)] = w;
    };

    int64_t cur = 0, max_pos = -1;
    std::size_t k = 0;
    while (k < slots.size()) {
      const int64_t type = type_at(k);
      std::size_t end = k;
      while (end < slots.size() && type_at(end) == type) ++end;
      const auto len = static_cast<int64_t>(end - k);
      if (type == 0) {
        for (int64_t j = 0; j < len; ++j) put(k + static_cast<std::size_t>(j), cur + j, cur + j, cur + j);
        max_pos = std::max(max_pos, cur + len - 1);
        cur += len;
      } else {
        VLM_CHECK(type == 1 || type == 2, "qwen2vl get_rope_index: mm_token_type_ids["
                                              << b << "][" << slots[k] << "] = " << type
                                              << " (expected 0 text, 1 image, 2 video)");
        const bool image = type == 1;
        const std::vector<Grid>& grids = image ? image_grids : video_grids;
        std::size_t& next = image ? next_image : next_video;
        VLM_CHECK(next < grids.size(), "qwen2vl get_rope_index: row " << b << " has more " << (image ? "image" : "video")
                                                                     << " runs than " << (image ? "image" : "video")
                                                                     << "_grid_thw rows (" << grids.size() << ")");
        const Grid g = grids[next++];
        const int64_t gh = g.h / m, gw = g.w / m;
        VLM_CHECK(g.t * gh * gw == len, "qwen2vl get_rope_index: row "
                                            << b << " has a run of " << len << " " << (image ? "image" : "video")
                                            << " tokens at " << slots[k] << ", but its grid (" << g.t << ", " << g.h
                                            << ", " << g.w << ") with merge " << m << " gives " << g.t * gh * gw);
        std::size_t n = k;
        for (int64_t t = 0; t < g.t; ++t)
          for (int64_t h = 0; h < gh; ++h)
            for (int64_t w = 0; w < gw; ++w) put(n++, cur + t, cur + h, cur + w);
        if (len > 0) max_pos = std::max({max_pos, cur + g.t - 1, cur + gh - 1, cur + gw - 1});
        cur += std::max(gh, gw);  // 5.17: the spatial extent only, not max(t, h', w')
      }
      k = end;
    }
    r.next_position.push_back(max_pos + 1);
    r.rope_deltas.push_back(max_pos + 1 - static_cast<int64_t>(slots.size()));
  }
  return r;
}

}  // namespace vlm::qwen2vl
