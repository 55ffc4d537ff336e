// LayerNorm and RMSNorm over the last axis, fused with their backward (llm.c's layernorm: forward
// keeps mean and rstd per row, backward uses them).
#include <algorithm>
#include <cmath>
#include <memory>

#include "lib/core/parallel.h"
#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {
namespace {

template <typename T>
void check_param(const TensorT<T>& p, int64_t C, const char* what) {
  VLM_CHECK(!p.defined() || (p.ndim() == 1 && p.dim(0) == C),
            what << " must be [" << C << "], got " << shape_str(p.shape()));
}

// Shared backward of both norms. xhat = (x - mean) * rstd (mean = 0 for RMSNorm), y = xhat*w + b.
// dx = rstd * (dxhat - [mean(dxhat)] - xhat * mean(dxhat * xhat)), dxhat = g * w.
template <typename T>
void norm_backward(const TensorT<T>& o, const std::vector<T>& mu, const std::vector<T>& rstd, bool center) {
  TensorT<T> x = o.input(0);
  const bool has_w = o.num_inputs() > 1 && o.input(1).defined();
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  const T* xp = x.data();
  const T* g = o.grad().data();
  const T* w = has_w ? o.input(1).data() : nullptr;
  if (x.requires_grad()) {
    bool fresh = false;  // a gradient allocated just now is set, not zeroed and added to
    T* dx = x.grad_data_fresh(fresh);
    parallel_for(rows, detail::row_grain(C), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* gr = g + r * C;
        const T* xr = xp + r * C;
        const T m = mu[static_cast<std::size_t>(r)], rs = rstd[static_cast<std::size_t>(r)];
        T* dxr = dx + r * C;
        T s1 = 0, s2 = 0;
        if (w) {
          s1 = center ? detail::lane_sum<T>(C, [&](int64_t j) { return gr[j] * w[j]; }) : T(0);
          s2 = detail::lane_sum<T>(C, [&](int64_t j) { return gr[j] * w[j] * ((xr[j] - m) * rs); });
        } else {
          s1 = center ? detail::lane_sum<T>(C, [&](int64_t j) { return gr[j]; }) : T(0);
          s2 = detail::lane_sum<T>(C, [&](int64_t j) { return gr[j] * ((xr[j] - m) * rs); });
        }
        s1 /= static_cast<T>(C);
        s2 /= static_cast<T>(C);
        if (fresh) std::fill(dxr, dxr + C, T(0));
        if (w) {
          for (int64_t j = 0; j < C; ++j) dxr[j] += rs * (gr[j] * w[j] - s1 - (xr[j] - m) * rs * s2);
        } else {
          for (int64_t j = 0; j < C; ++j) dxr[j] += rs * (gr[j] - s1 - (xr[j] - m) * rs * s2);
        }
      }
    });
  }
  // Parameter gradients: each element summed over rows in row order, split over the elements, so
  // the result does not depend on the thread count.
  for (std::size_t k = 1; k < o.num_inputs(); ++k) {
    TensorT<T> p = o.input(k);
    if (!p.requires_grad()) continue;
    bool fresh = false;
    T* dp = p.grad_data_fresh(fresh);
    if (!(k == 1 && has_w)) {  // bias
      detail::sum_rows_into(g, rows, C, dp, fresh);
      continue;
    }
    const int64_t grain = std::max<int64_t>(16, detail::kElementwiseGrain / std::max<int64_t>(rows, 1));
    parallel_for(C, grain, [&](int64_t j0, int64_t j1) {
      if (fresh) std::fill(dp + j0, dp + j1, T(0));
      for (int64_t r = 0; r < rows; ++r) {
        const T* gr = g + r * C;
        const T* xr = xp + r * C;
        const T m = mu[static_cast<std::size_t>(r)], rs = rstd[static_cast<std::size_t>(r)];
        for (int64_t j = j0; j < j1; ++j) dp[j] += gr[j] * ((xr[j] - m) * rs);
      }
    });
  }
}

}  // namespace

template <typename T>
TensorT<T> layer_norm(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, double eps) {
  VLM_CHECK(x.ndim() >= 1 && x.dim(-1) > 0, "layer_norm: empty last axis in " << shape_str(x.shape()));
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  check_param(weight, C, "layer_norm weight");
  check_param(bias, C, "layer_norm bias");
  std::vector<T> mu(static_cast<std::size_t>(rows)), rstd(static_cast<std::size_t>(rows));
  TensorT<T> out = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  const T* w = weight.defined() ? weight.data() : nullptr;
  const T* bp = bias.defined() ? bias.data() : nullptr;
  T* y = out.data();
  const T e = static_cast<T>(eps);
  parallel_for(rows, detail::row_grain(C), [&](int64_t b, int64_t end) {
    for (int64_t r = b; r < end; ++r) {
      const T* xr = xp + r * C;
      const T m = detail::lane_sum<T>(C, [&](int64_t j) { return xr[j]; }) / static_cast<T>(C);
      // biased variance, as torch
      const T v = detail::lane_sum<T>(C, [&](int64_t j) { return (xr[j] - m) * (xr[j] - m); }) / static_cast<T>(C);
      const T rs = T(1) / std::sqrt(v + e);
      mu[static_cast<std::size_t>(r)] = m;
      rstd[static_cast<std::size_t>(r)] = rs;
      T* yr = y + r * C;
      if (w && bp) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - m) * rs * w[j] + bp[j];
      } else {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - m) * rs * (w ? w[j] : T(1)) + (bp ? bp[j] : T(0));
      }
    }
  });
  // Inputs: x, then weight (possibly undefined, kept as a slot), then bias if defined.
  std::vector<TensorT<T>> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  out.set_backward(std::move(inputs), [mu = std::move(mu), rstd = std::move(rstd)](const TensorT<T>& o) {
    norm_backward(o, mu, rstd, true);
  });
  return out;
}

template <typename T>
TensorT<T> rms_norm(const TensorT<T>& x, const TensorT<T>& weight, double eps) {
  VLM_CHECK(x.ndim() >= 1 && x.dim(-1) > 0, "rms_norm: empty last axis in " << shape_str(x.shape()));
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  check_param(weight, C, "rms_norm weight");
  std::vector<T> zero(static_cast<std::size_t>(rows), T(0)), rstd(static_cast<std::size_t>(rows));
  TensorT<T> out = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  const T* w = weight.defined() ? weight.data() : nullptr;
  T* y = out.data();
  const T e = static_cast<T>(eps);
  parallel_for(rows, detail::row_grain(C), [&](int64_t b, int64_t end) {
    for (int64_t r = b; r < end; ++r) {
      const T* xr = xp + r * C;
      const T ss = detail::lane_sum<T>(C, [&](int64_t j) { return xr[j] * xr[j]; });
      const T rs = T(1) / std::sqrt(ss / static_cast<T>(C) + e);
      rstd[static_cast<std::size_t>(r)] = rs;
      // HF: normalise (cast back to the input dtype), then multiply by the weight.
      T* yr = y + r * C;
      if (w) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] * rs) * w[j];
      } else {
        for (int64_t j = 0; j < C; ++j) yr[j] = xr[j] * rs;
      }
    }
  });
  out.set_backward({x, weight}, [zero = std::move(zero), rstd = std::move(rstd)](const TensorT<T>& o) {
    norm_backward(o, zero, rstd, false);
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                                                              \
  template TensorT<T> layer_norm(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, double);     \
  template TensorT<T> rms_norm(const TensorT<T>&, const TensorT<T>&, double);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
