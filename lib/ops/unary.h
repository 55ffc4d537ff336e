// Internal: the elementwise unary op pattern, y = f(x) with dx += g · f'(x, y), split over threads.
#pragma once

#include "lib/core/parallel.h"
#include "lib/ops/op_util.h"

namespace vlm::detail {

// fwd(x) -> y; dydx(x, y) -> f'(x). Both are plain per-element lambdas, inlined into the loops.
template <typename T, class Fwd, class Deriv>
TensorT<T> unary_op(const TensorT<T>& x, Fwd fwd, Deriv dydx) {
  TensorT<T> out = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* yp = out.data();
  parallel_for(x.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) yp[i] = fwd(xp[i]);
  });
  out.set_backward({x}, [dydx](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* xi = in.data();
    const T* y = o.data();
    const T* g = o.grad().data();
    bool fresh = false;  // a gradient allocated just now is set, not zeroed and added to
    T* dx = in.grad_data_fresh(fresh);
    parallel_for(in.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      set_or_add(dx, b, e, fresh, [&](int64_t i) { return g[i] * dydx(xi[i], y[i]); });
    });
  });
  return out;
}

// The same pattern on whole chunks as Eigen array expressions, for activations whose math Eigen
// vectorises (exp, logistic, tanh): fwd(x, y) sets y = f(x); grad(x, y, g, dx) adds g · f'(x) to dx.
// x, y, g are const maps and dx a map of one chunk; the chunks depend only on (numel, threads).
template <typename T, class Fwd, class Grad>
TensorT<T> unary_op_chunks(const TensorT<T>& x, Fwd fwd, Grad grad) {
  using CMap = typename TensorT<T>::ConstMap;
  using Map = typename TensorT<T>::Map;
  TensorT<T> out = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* yp = out.data();
  parallel_for(x.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    Map y(yp + b, e - b);
    fwd(CMap(xp + b, e - b), y);
  });
  out.set_backward({x}, [grad](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const TensorT<T> gt = o.grad();
    const T* xi = in.data();
    const T* y = o.data();
    const T* g = gt.data();
    bool fresh = false;  // a gradient allocated just now is zeroed here, chunk by chunk, in cache
    T* dx = in.grad_data_fresh(fresh);
    parallel_for(in.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      Map d(dx + b, e - b);
      if (fresh) d.setZero();
      grad(CMap(xi + b, e - b), CMap(y + b, e - b), CMap(g + b, e - b), d);
    });
  });
  return out;
}

}  // namespace vlm::detail
