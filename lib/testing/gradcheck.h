// Gradient check in double: central differences against backward(), with the output reduced by
// fixed random weights (a plain sum hides errors, e.g. in softmax, whose rows sum to a constant).
// Error = max over every input element of |g - g_num| / max(1, |g| + |g_num|).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lib/core/random.h"
#include "lib/core/tensor.h"

namespace vlm::testing {

using TD = TensorT<double>;

struct GradCheckResult {
  double max_error = 0.0;
  int worst_input = -1;
  int64_t worst_index = -1;
};

// f maps the inputs to one output tensor. Inputs with differentiable[i] == false are held fixed.
template <class F>
GradCheckResult grad_check(F&& f, const std::vector<TD>& inputs, std::vector<bool> differentiable = {},
                           double h = 1e-6, uint64_t seed = 1234) {
  if (differentiable.empty()) differentiable.assign(inputs.size(), true);
  std::vector<TD> xs;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    TD x = inputs[i].clone();
    if (differentiable[i]) x.set_requires_grad(true);
    xs.push_back(x);
  }
  TD out = f(xs);
  Rng rng(seed);
  const TD w = TD::randn(out.shape(), rng);
  out.backward(w);

  auto reduced = [&]() {
    NoGradGuard no_grad;
    const TD o = f(xs);
    return (o.vec() * w.vec()).sum();
  };
  GradCheckResult r;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!differentiable[i]) continue;
    const TD g = xs[i].grad();
    double* p = xs[i].data();
    for (int64_t e = 0; e < xs[i].numel(); ++e) {
      const double saved = p[e];
      p[e] = saved + h;
      const double fp = reduced();
      p[e] = saved - h;
      const double fm = reduced();
      p[e] = saved;
      const double num = (fp - fm) / (2 * h);
      const double an = g.data()[e];
      const double err = std::abs(an - num) / std::max(1.0, std::abs(an) + std::abs(num));
      if (err > r.max_error || r.worst_input < 0) {
        r.max_error = std::max(r.max_error, err);
        r.worst_input = static_cast<int>(i);
        r.worst_index = e;
      }
    }
  }
  return r;
}

}  // namespace vlm::testing
