// Elementwise ops. Binary ops broadcast numpy-style; their backward sums the gradient over the
// broadcast dimensions in element order (split over the broadcast operand's elements when it is a
// trailing block such as a bias, else serially), so it does not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "lib/ops/ops.h"
#include "lib/ops/unary.h"

namespace vlm {
namespace {

using detail::kElementwiseGrain;

// Elements of `in` per period when `in` broadcasts to `out` as a trailing block (leading dims of
// size 1 dropped, the rest equal to out's last dims: a bias or position table added to every row),
// else 0. Then element i of out reads element i % period of in.
inline int64_t suffix_period(const Shape& out, const Shape& in) {
  std::size_t lead = 0;
  while (lead < in.size() && in[lead] == 1) ++lead;
  const std::size_t k = in.size() - lead;
  if (k > out.size()) return 0;
  for (std::size_t i = 0; i < k; ++i)
    if (in[lead + i] != out[out.size() - k + i]) return 0;
  return numel_of(in);
}

// fwd(a, b) -> y; da(a, b, y) and db(a, b, y) are the partial derivatives. A broadcast operand
// that is a trailing block of the output (a bias, a gate, a position table: suffix_period > 0) is
// read at j of output element i = r·period + j, with loops over (r, j); any other broadcast reads
// through a table of offsets (broadcast_offsets).
template <typename T, class Fwd, class Da, class Db>
TensorT<T> binary_op(const TensorT<T>& a, const TensorT<T>& b, Fwd fwd, Da da, Db db) {
  const Shape out_shape = detail::broadcast_shape(a.shape(), b.shape());
  TensorT<T> out = TensorT<T>::empty(out_shape);
  const int64_t n = out.numel();
  const T* ap = a.data();
  const T* bp = b.data();
  T* y = out.data();
  const bool a_bc = n > 0 && a.shape() != out_shape, b_bc = n > 0 && b.shape() != out_shape;
  const int64_t a_period = a_bc ? suffix_period(out_shape, a.shape()) : 0;
  const int64_t b_period = b_bc ? suffix_period(out_shape, b.shape()) : 0;
  std::vector<int64_t> ao, bo;  // only for a broadcast that is not a trailing block
  if (a_bc && a_period == 0) ao = detail::broadcast_offsets(out_shape, a.shape());
  if (b_bc && b_period == 0) bo = detail::broadcast_offsets(out_shape, b.shape());
  const bool general = !ao.empty() || !bo.empty();
  // Without offset tables: rows of `period` elements, a trailing-block operand read at j.
  const int64_t period = a_period > 0 ? a_period : (b_period > 0 ? b_period : std::max<int64_t>(n, 1));
  const int64_t row_grain = std::max<int64_t>(1, kElementwiseGrain / period);
  if (!a_bc && !b_bc) {
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = fwd(ap[i], bp[i]);
    });
  } else if (!general) {
    parallel_for(n / period, row_grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* ar = a_period > 0 ? ap : ap + r * period;
        const T* br = b_period > 0 ? bp : bp + r * period;
        T* yr = y + r * period;
        for (int64_t j = 0; j < period; ++j) yr[j] = fwd(ar[j], br[j]);
      }
    });
  } else {
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const std::size_t k = static_cast<std::size_t>(i);
        const int64_t ia = !ao.empty() ? ao[k] : (a_period > 0 ? i % a_period : i);
        const int64_t ib = !bo.empty() ? bo[k] : (b_period > 0 ? i % b_period : i);
        y[i] = fwd(ap[ia], bp[ib]);
      }
    });
  }
  out.set_backward({a, b}, [da, db, ao, bo, a_bc, b_bc, a_period, b_period, general, period,
                            row_grain](const TensorT<T>& o) {
    TensorT<T> x = o.input(0), z = o.input(1);
    const T* xp = x.data();
    const T* zp = z.data();
    const T* yp = o.data();
    const TensorT<T> gt = o.grad();
    const T* g = gt.data();
    const int64_t m = o.numel();
    // Element of x / z that output element i reads (the general layout).
    auto xa = [&](int64_t i) {
      return !ao.empty() ? ao[static_cast<std::size_t>(i)] : (a_period > 0 ? i % a_period : i);
    };
    auto zb = [&](int64_t i) {
      return !bo.empty() ? bo[static_cast<std::size_t>(i)] : (b_period > 0 ? i % b_period : i);
    };
    // One operand's gradient; x's first, then z's, so that add(t, t) sums both terms in that order.
    // d = g ⊙ deriv at the operand's own elements: a full-size operand elementwise (set when its
    // gradient was just allocated); a broadcast one summed over the elements that read it, in
    // element order (split over its elements when it is a trailing block, else serially).
    auto one = [&](TensorT<T>& t, bool broadcast, int64_t own_period, auto deriv) {
      if (!t.requires_grad() || m == 0) return;
      if (!broadcast) {
        bool fresh = false;
        T* d = t.grad_data_fresh(fresh);
        if (!a_bc && !b_bc) {
          parallel_for(m, kElementwiseGrain, [&](int64_t s, int64_t e) {
            detail::set_or_add(d, s, e, fresh, [&](int64_t i) { return g[i] * deriv(xp[i], zp[i], yp[i]); });
          });
        } else if (!general) {
          parallel_for(m / period, row_grain, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) {
              const T* xr = a_period > 0 ? xp : xp + r * period;
              const T* zr = b_period > 0 ? zp : zp + r * period;
              const int64_t base = r * period;
              for (int64_t j = 0; j < period; ++j) {
                const T v = g[base + j] * deriv(xr[j], zr[j], yp[base + j]);
                d[base + j] = fresh ? v : d[base + j] + v;
              }
            }
          });
        } else {
          parallel_for(m, kElementwiseGrain, [&](int64_t s, int64_t e) {
            for (int64_t i = s; i < e; ++i) {
              const T v = g[i] * deriv(xp[xa(i)], zp[zb(i)], yp[i]);
              d[i] = fresh ? v : d[i] + v;
            }
          });
        }
        return;
      }
      T* d = t.grad_data();
      if (own_period > 0) {  // a trailing block: its elements split over the threads, rows in order
        const int64_t rows = m / own_period;
        const int64_t grain = std::max<int64_t>(16, kElementwiseGrain / std::max<int64_t>(rows, 1));
        const bool is_x = &t == &x;  // this operand is read at j; the other through its layout
        parallel_for(own_period, grain, [&](int64_t j0, int64_t j1) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = j0; j < j1; ++j) {
              const int64_t i = r * own_period + j;
              d[j] += g[i] * deriv(xp[is_x ? j : xa(i)], zp[is_x ? zb(i) : j], yp[i]);
            }
        });
        return;
      }
      const std::vector<int64_t>& off = &t == &x ? ao : bo;
      for (int64_t i = 0; i < m; ++i) d[off[static_cast<std::size_t>(i)]] += g[i] * deriv(xp[xa(i)], zp[zb(i)], yp[i]);
    };
    one(x, a_bc, a_period, da);
    one(z, b_bc, b_period, db);
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
