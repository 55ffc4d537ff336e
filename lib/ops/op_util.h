// Internal helpers shared by the op implementations (not part of the public API).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lib/core/tensor.h"

namespace vlm::detail {

int normalize_axis(int axis, int ndim);

// numpy broadcasting of two shapes.
Shape broadcast_shape(const Shape& a, const Shape& b);

// For every element of `out` (row-major), the offset of the element of `in` it reads when `in`
// is broadcast to `out`.
std::vector<int64_t> broadcast_offsets(const Shape& out, const Shape& in);

// x viewed as [outer, n, inner] around `axis`.
struct AxisView {
  int64_t outer, n, inner;
};
AxisView axis_view(const Shape& shape, int axis);

// sum over j in [0, n) of f(j), in 16 interleaved partial sums: the compiler keeps them in one vector
// register (a plain running sum is a chain of dependent adds, 4 cycles per element), and the order
// depends only on n, not on where the data lies.
template <typename T, class F>
T lane_sum(int64_t n, F f) {
  constexpr int64_t kLanes = 16;
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) acc[k] += f(j + k);
  for (int64_t k = 0; j + k < n; ++k) acc[k] += f(j + k);
  T s = 0;
  for (int64_t k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// d[j] (+)= Σ_i g[i·cols + j] over rows i in [0, rows): a bias or norm-parameter gradient. Split
// over columns, each summed in row order, so the result does not depend on the thread count.
// With overwrite, d is set rather than added to (a gradient allocated just now).
template <typename T>
void sum_rows_into(const T* g, int64_t rows, int64_t cols, T* d, bool overwrite);

// Writes a gradient range: d[i] = f(i) for i in [b, e) when the gradient was allocated just now
// (TensorT::grad_data_fresh set `fresh`), else d[i] += f(i). The branch is taken once per range.
template <typename T, class F>
inline void set_or_add(T* d, int64_t b, int64_t e, bool fresh, F f) {
  if (fresh) {
    for (int64_t i = b; i < e; ++i) d[i] = f(i);
  } else {
    for (int64_t i = b; i < e; ++i) d[i] += f(i);
  }
}

// Element count above which elementwise loops are split over threads.
inline constexpr int64_t kElementwiseGrain = 1 << 13;

// Rows per thread chunk at least for row-wise ops (norms, softmax) over rows of `cols` elements:
// 16 rows, or enough rows for about 8k elements, so small inputs (a prefill's few dozen tokens)
// do not wake the threads for microseconds of work.
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(16, (kElementwiseGrain / 4) / std::max<int64_t>(cols, 1)); }

}  // namespace vlm::detail
