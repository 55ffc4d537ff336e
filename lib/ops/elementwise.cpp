// Elementwise ops. Binary ops broadcast numpy-style; their backward sums the gradient over the
// broadcast dimensions (serially, in element order, so it is deterministic).
#include <cmath>

#include "lib/ops/ops.h"
#include "lib/ops/unary.h"

namespace vlm {
namespace {

using detail::kElementwiseGrain;

// fwd(a, b) -> y; da(a, b, y) and db(a, b, y) are the partial derivatives.
template <typename T, class Fwd, class Da, class Db>
TensorT<T> binary_op(const TensorT<T>& a, const TensorT<T>& b, Fwd fwd, Da da, Db db) {
  const Shape out_shape = detail::broadcast_shape(a.shape(), b.shape());
  TensorT<T> out = TensorT<T>::empty(out_shape);
  const int64_t n = out.numel();
  const T* ap = a.data();
  const T* bp = b.data();
  T* y = out.data();
  const bool same = a.shape() == b.shape();
  // Offsets are only materialised for a genuinely broadcast operand.
  std::vector<int64_t> ao, bo;
  if (!same) {
    if (a.shape() != out_shape) ao = detail::broadcast_offsets(out_shape, a.shape());
    if (b.shape() != out_shape) bo = detail::broadcast_offsets(out_shape, b.shape());
  }
  if (ao.empty() && bo.empty()) {
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = fwd(ap[i], bp[i]);
    });
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const std::size_t k = static_cast<std::size_t>(i);
      y[i] = fwd(ap[ao.empty() ? i : ao[k]], bp[bo.empty() ? i : bo[k]]);
    }
  }
  out.set_backward({a, b}, [da, db, ao, bo](const TensorT<T>& o) {
    TensorT<T> x = o.input(0), z = o.input(1);
    const T* xp = x.data();
    const T* zp = z.data();
    const T* yp = o.data();
    const T* g = o.grad().data();
    const int64_t m = o.numel();
    T* dx = x.requires_grad() ? x.grad_data() : nullptr;
    T* dz = z.requires_grad() ? z.grad_data() : nullptr;
    if (ao.empty() && bo.empty()) {
      parallel_for(m, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) {
          if (dx) dx[i] += g[i] * da(xp[i], zp[i], yp[i]);
          if (dz) dz[i] += g[i] * db(xp[i], zp[i], yp[i]);
        }
      });
      return;
    }
    for (int64_t i = 0; i < m; ++i) {
      const std::size_t k = static_cast<std::size_t>(i);
      const int64_t ia = ao.empty() ? i : ao[k], ib = bo.empty() ? i : bo[k];
      if (dx) dx[ia] += g[i] * da(xp[ia], zp[ib], yp[i]);
      if (dz) dz[ib] += g[i] * db(xp[ia], zp[ib], yp[i]);
    }
  });
  return out;
}

}  // namespace

template <typename T>
TensorT<T> add(const TensorT<T>& a, const TensorT<T>& b) {
  return binary_op(
      a, b, [](T x, T z) { return x + z; }, [](T, T, T) { return T(1); }, [](T, T, T) { return T(1); });
}

template <typename T>
TensorT<T> sub(const TensorT<T>& a, const TensorT<T>& b) {
  return binary_op(
      a, b, [](T x, T z) { return x - z; }, [](T, T, T) { return T(1); }, [](T, T, T) { return T(-1); });
}

template <typename T>
TensorT<T> mul(const TensorT<T>& a, const TensorT<T>& b) {
  return binary_op(
      a, b, [](T x, T z) { return x * z; }, [](T, T z, T) { return z; }, [](T x, T, T) { return x; });
}

template <typename T>
TensorT<T> div(const TensorT<T>& a, const TensorT<T>& b) {
  return binary_op(
      a, b, [](T x, T z) { return x / z; }, [](T, T z, T) { return T(1) / z; },
      [](T, T z, T y) { return -y / z; });
}

template <typename T>
TensorT<T> scale(const TensorT<T>& x, double s) {
  const T k = static_cast<T>(s);
  return detail::unary_op(x, [k](T v) { return v * k; }, [k](T, T) { return k; });
}

template <typename T>
TensorT<T> add_scalar(const TensorT<T>& x, double s) {
  const T k = static_cast<T>(s);
  return detail::unary_op(x, [k](T v) { return v + k; }, [](T, T) { return T(1); });
}

template <typename T>
TensorT<T> neg(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return -v; }, [](T, T) { return T(-1); });
}

template <typename T>
TensorT<T> exp(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return std::exp(v); }, [](T, T y) { return y; });
}

template <typename T>
TensorT<T> log(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return std::log(v); }, [](T v, T) { return T(1) / v; });
}

template <typename T>
TensorT<T> sqrt(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return std::sqrt(v); }, [](T, T y) { return T(0.5) / y; });
}

template <typename T>
TensorT<T> rsqrt(const TensorT<T>& x) {
  return detail::unary_op(
      x, [](T v) { return T(1) / std::sqrt(v); }, [](T v, T y) { return T(-0.5) * y / v; });
}

template <typename T>
TensorT<T> square(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return v * v; }, [](T v, T) { return T(2) * v; });
}

template <typename T>
TensorT<T> sigmoid(const TensorT<T>& x) {
  return detail::unary_op(
      x, [](T v) { return T(1) / (T(1) + std::exp(-v)); }, [](T, T y) { return y * (T(1) - y); });
}

template <typename T>
TensorT<T> erf(const TensorT<T>& x) {
  static const T k2OverSqrtPi = static_cast<T>(1.1283791670955126);
  return detail::unary_op(
      x, [](T v) { return std::erf(v); }, [](T v, T) { return k2OverSqrtPi * std::exp(-v * v); });
}

#define VLM_INSTANTIATE(T)                                                \
  template TensorT<T> add(const TensorT<T>&, const TensorT<T>&);          \
  template TensorT<T> sub(const TensorT<T>&, const TensorT<T>&);          \
  template TensorT<T> mul(const TensorT<T>&, const TensorT<T>&);          \
  template TensorT<T> div(const TensorT<T>&, const TensorT<T>&);          \
  template TensorT<T> scale(const TensorT<T>&, double);                   \
  template TensorT<T> add_scalar(const TensorT<T>&, double);              \
  template TensorT<T> neg(const TensorT<T>&);                             \
  template TensorT<T> exp(const TensorT<T>&);                             \
  template TensorT<T> log(const TensorT<T>&);                             \
  template TensorT<T> sqrt(const TensorT<T>&);                            \
  template TensorT<T> rsqrt(const TensorT<T>&);                           \
  template TensorT<T> square(const TensorT<T>&);                          \
  template TensorT<T> sigmoid(const TensorT<T>&);                         \
  template TensorT<T> erf(const TensorT<T>&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
