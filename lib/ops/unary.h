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
    T* dx = in.grad_data();
    parallel_for(in.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dx[i] += g[i] * dydx(xi[i], y[i]);
    });
  });
  return out;
}

}  // namespace vlm::detail
