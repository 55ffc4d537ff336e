#include "lib/ops/op_util.h"

#include <algorithm>

#include "lib/core/parallel.h"

namespace vlm::detail {

int normalize_axis(int axis, int ndim) {
  const int a = axis < 0 ? axis + ndim : axis;
  VLM_CHECK(a >= 0 && a < ndim, "axis " << axis << " out of range for " << ndim << "-D tensor");
  return a;
}

Shape broadcast_shape(const Shape& a, const Shape& b) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    VLM_CHECK(da == db || da == 1 || db == 1,
              "shapes " << shape_str(a) << " and " << shape_str(b) << " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_offsets(const Shape& out, const Shape& in) {
  const std::size_t n = out.size();
  VLM_CHECK(in.size() <= n, "cannot broadcast " << shape_str(in) << " to " << shape_str(out));
  // Stride of `in` for each output dim (0 where broadcast).
  std::vector<int64_t> stride(n, 0);
  int64_t s = 1;
  for (std::size_t k = 0; k < in.size(); ++k) {
    const std::size_t i = in.size() - 1 - k, o = n - 1 - k;
    VLM_CHECK(in[i] == out[o] || in[i] == 1, "cannot broadcast " << shape_str(in) << " to " << shape_str(out));
    stride[o] = in[i] == 1 ? 0 : s;
    s *= in[i];
  }
  const int64_t total = numel_of(out);
  std::vector<int64_t> offs(static_cast<std::size_t>(total));
  std::vector<int64_t> idx(n, 0);
  int64_t off = 0;
  for (int64_t e = 0; e < total; ++e) {
    offs[static_cast<std::size_t>(e)] = off;
    for (std::size_t d = n; d-- > 0;) {  // odometer increment
      if (++idx[d] < out[d]) {
        off += stride[d];
        break;
      }
      off -= stride[d] * (out[d] - 1);
      idx[d] = 0;
    }
  }
  return offs;
}

template <typename T>
void sum_rows_into(const T* g, int64_t rows, int64_t cols, T* d, bool overwrite) {
  // Chunks of at least 16 columns (a cache line) with about kElementwiseGrain elements between them.
  const int64_t grain = std::max<int64_t>(16, kElementwiseGrain / std::max<int64_t>(rows, 1));
  parallel_for(cols, grain, [&](int64_t j0, int64_t j1) {
    if (overwrite) std::fill(d + j0, d + j1, T(0));
    for (int64_t i = 0; i < rows; ++i) {
      const T* gi = g + i * cols;
      for (int64_t j = j0; j < j1; ++j) d[j] += gi[j];
    }
  });
}
template void sum_rows_into<float>(const float*, int64_t, int64_t, float*, bool);
template void sum_rows_into<double>(const double*, int64_t, int64_t, double*, bool);

AxisView axis_view(const Shape& shape, int axis) {
  const int a = normalize_axis(axis, static_cast<int>(shape.size()));
  AxisView v{1, shape[static_cast<std::size_t>(a)], 1};
  for (int i = 0; i < a; ++i) v.outer *= shape[static_cast<std::size_t>(i)];
  for (std::size_t i = static_cast<std::size_t>(a) + 1; i < shape.size(); ++i) v.inner *= shape[i];
  return v;
}

}  // namespace vlm::detail
