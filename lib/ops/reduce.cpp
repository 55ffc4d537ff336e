// Reductions along one axis, viewed as [outer, n, inner].
#include <limits>

#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {
namespace {

Shape reduced_shape(const Shape& s, int axis, bool keepdim) {
  const int a = detail::normalize_axis(axis, static_cast<int>(s.size()));
  Shape out = s;
  if (keepdim)
    out[static_cast<std::size_t>(a)] = 1;
  else
    out.erase(out.begin() + a);
  return out;
}

template <typename T>
TensorT<T> sum_scaled(const TensorT<T>& x, int axis, bool keepdim, double factor) {
  const detail::AxisView v = detail::axis_view(x.shape(), axis);
  TensorT<T> out = TensorT<T>::zeros(reduced_shape(x.shape(), axis, keepdim));
  const T f = static_cast<T>(factor);
  const T* xp = x.data();
  T* y = out.data();
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t k = 0; k < v.n; ++k)
      for (int64_t i = 0; i < v.inner; ++i) y[o * v.inner + i] += xp[(o * v.n + k) * v.inner + i];
  if (factor != 1.0) out.vec() *= f;
  out.set_backward({x}, [v, f](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* g = o.grad().data();
    T* dx = in.grad_data();
    for (int64_t a = 0; a < v.outer; ++a)
      for (int64_t k = 0; k < v.n; ++k)
        for (int64_t i = 0; i < v.inner; ++i) dx[(a * v.n + k) * v.inner + i] += f * g[a * v.inner + i];
  });
  return out;
}

}  // namespace

template <typename T>
TensorT<T> sum(const TensorT<T>& x, int axis, bool keepdim) {
  return sum_scaled(x, axis, keepdim, 1.0);
}

template <typename T>
TensorT<T> mean(const TensorT<T>& x, int axis, bool keepdim) {
  const int64_t n = detail::axis_view(x.shape(), axis).n;
  VLM_CHECK(n > 0, "mean over an empty axis of " << shape_str(x.shape()));
  return sum_scaled(x, axis, keepdim, 1.0 / static_cast<double>(n));
}

template <typename T>
TensorT<T> max(const TensorT<T>& x, int axis, bool keepdim) {
  const detail::AxisView v = detail::axis_view(x.shape(), axis);
  VLM_CHECK(v.n > 0, "max over an empty axis of " << shape_str(x.shape()));
  TensorT<T> out = TensorT<T>::empty(reduced_shape(x.shape(), axis, keepdim));
  std::vector<int64_t> arg(static_cast<std::size_t>(v.outer * v.inner));  // first maximum, as torch
  const T* xp = x.data();
  T* y = out.data();
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      int64_t best = 0;
      T bv = xp[o * v.n * v.inner + i];
      for (int64_t k = 1; k < v.n; ++k) {
        const T c = xp[(o * v.n + k) * v.inner + i];
        if (c > bv) {
          bv = c;
          best = k;
        }
      }
      y[o * v.inner + i] = bv;
      arg[static_cast<std::size_t>(o * v.inner + i)] = best;
    }
  }
  out.set_backward({x}, [v, arg](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* g = o.grad().data();
    T* dx = in.grad_data();
    for (int64_t a = 0; a < v.outer; ++a)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t k = arg[static_cast<std::size_t>(a * v.inner + i)];
        dx[(a * v.n + k) * v.inner + i] += g[a * v.inner + i];
      }
  });
  return out;
}

template <typename T>
TensorT<T> sum_all(const TensorT<T>& x) {
  TensorT<T> out = TensorT<T>::full({}, static_cast<T>(x.vec().sum()));
  out.set_backward({x}, [](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    in.grad_vec() += o.grad().item();
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                  \
  template TensorT<T> sum(const TensorT<T>&, int, bool);    \
  template TensorT<T> mean(const TensorT<T>&, int, bool);   \
  template TensorT<T> max(const TensorT<T>&, int, bool);    \
  template TensorT<T> sum_all(const TensorT<T>&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
