// Row indexing: gather (embedding lookup) and masked row scatter (HF masked_scatter of image
// features into token embeddings, rows visited in row-major order).
#include <algorithm>
#include <cstring>

#include "lib/core/parallel.h"
#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {

template <typename T>
TensorT<T> gather_rows(const TensorT<T>& table, const std::vector<int64_t>& ids) {
  VLM_CHECK(table.ndim() == 2, "gather_rows: table must be [N, C], got " << shape_str(table.shape()));
  const int64_t N = table.dim(0), C = table.dim(1);
  const auto n = static_cast<int64_t>(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i)
    VLM_CHECK(ids[i] >= 0 && ids[i] < N, "gather_rows: id " << ids[i] << " at position " << i
                                                            << " is outside the table's " << N << " rows");
  TensorT<T> out = TensorT<T>::empty({n, C});
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out.data() + i * C, table.data() + ids[static_cast<std::size_t>(i)] * C,
                static_cast<std::size_t>(C) * sizeof(T));
  out.set_backward({table}, [ids, C](const TensorT<T>& o) {
    TensorT<T> t = o.input(0);
    const T* g = o.grad().data();
    T* dt = t.grad_data();
    for (std::size_t i = 0; i < ids.size(); ++i) {  // in order: repeated ids accumulate deterministically
      T* d = dt + ids[i] * C;
      const T* s = g + static_cast<int64_t>(i) * C;
      for (int64_t c = 0; c < C; ++c) d[c] += s[c];
    }
  });
  return out;
}

template <typename T>
TensorT<T> scatter_rows(const TensorT<T>& dst, const std::vector<uint8_t>& row_mask, const TensorT<T>& src) {
  VLM_CHECK(dst.ndim() == 2 && src.ndim() == 2, "scatter_rows: dst and src must be 2-D, got "
                                                    << shape_str(dst.shape()) << " and " << shape_str(src.shape()));
  const int64_t N = dst.dim(0), C = dst.dim(1);
  VLM_CHECK(static_cast<int64_t>(row_mask.size()) == N,
            "scatter_rows: mask has " << row_mask.size() << " entries for " << N << " rows");
  VLM_CHECK(src.dim(1) == C, "scatter_rows: src width " << src.dim(1) << " != dst width " << C);
  std::vector<int64_t> rows;  // destination row of each src row
  for (int64_t i = 0; i < N; ++i)
    if (row_mask[static_cast<std::size_t>(i)]) rows.push_back(i);
  VLM_CHECK(static_cast<int64_t>(rows.size()) == src.dim(0),
            "scatter_rows: " << rows.size() << " masked rows (e.g. image tokens) but " << src.dim(0)
                             << " source rows (e.g. image features)");
  TensorT<T> out = dst.clone();
  for (std::size_t r = 0; r < rows.size(); ++r)
    std::memcpy(out.data() + rows[r] * C, src.data() + static_cast<int64_t>(r) * C,
                static_cast<std::size_t>(C) * sizeof(T));
  out.set_backward({dst, src}, [rows, row_mask, C, N](const TensorT<T>& o) {
    TensorT<T> d = o.input(0), s = o.input(1);
    const TensorT<T> gt = o.grad();
    const T* g = gt.data();
    const int64_t grain = std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(C, 1));
    bool fresh = false;  // gradients allocated just now are set, not zeroed and added to
    if (d.requires_grad()) {  // the rows that were not replaced
      T* dd = d.grad_data_fresh(fresh);
      parallel_for(N, grain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          T* dr = dd + r * C;
          const T* gr = g + r * C;
          if (row_mask[static_cast<std::size_t>(r)] != 0) {
            if (fresh) std::fill(dr, dr + C, T(0));
          } else {
            detail::set_or_add(dr, 0, C, fresh, [&](int64_t c) { return gr[c]; });
          }
        }
      });
    }
    if (s.requires_grad()) {
      T* ds = s.grad_data_fresh(fresh);
      parallel_for(static_cast<int64_t>(rows.size()), grain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          T* dr = ds + r * C;
          const T* gr = g + rows[static_cast<std::size_t>(r)] * C;
          detail::set_or_add(dr, 0, C, fresh, [&](int64_t c) { return gr[c]; });
        }
      });
    }
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                                                         \
  template TensorT<T> gather_rows(const TensorT<T>&, const std::vector<int64_t>&);                 \
  template TensorT<T> scatter_rows(const TensorT<T>&, const std::vector<uint8_t>&, const TensorT<T>&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
