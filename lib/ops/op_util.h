// Internal helpers shared by the op implementations (not part of the public API).
#pragma once

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

// Element count above which elementwise loops are split over threads.
inline constexpr int64_t kElementwiseGrain = 1 << 15;

}  // namespace vlm::detail
