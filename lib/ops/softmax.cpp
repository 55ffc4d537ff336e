// Softmax, log-softmax and cross-entropy over the last axis, fused with their backward.
#include <algorithm>
#include <cmath>

#include "lib/core/parallel.h"
#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {
namespace {

template <typename T>
void check_rows(const TensorT<T>& x, const char* op) {
  VLM_CHECK(x.ndim() >= 1 && x.dim(-1) > 0, op << ": needs a non-empty last axis, got " << shape_str(x.shape()));
}

// y[r] = x[r] - logsumexp(x[r]); returns nothing, writes y.
template <typename T>
void log_softmax_rows(const T* x, T* y, int64_t rows, int64_t V) {
  parallel_for(rows, detail::row_grain(V), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * V;
      T* yr = y + r * V;
      const T m = *std::max_element(xr, xr + V);
      T s = 0;
      for (int64_t j = 0; j < V; ++j) s += std::exp(xr[j] - m);
      const T lse = m + std::log(s);
      for (int64_t j = 0; j < V; ++j) yr[j] = xr[j] - lse;
    }
  });
}

}  // namespace

template <typename T>
TensorT<T> softmax(const TensorT<T>& x) {
  check_rows(x, "softmax");
  const int64_t V = x.dim(-1), rows = x.numel() / V;
  TensorT<T> out = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* y = out.data();
  parallel_for(rows, detail::row_grain(V), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = xp + r * V;
      T* yr = y + r * V;
      const T m = *std::max_element(xr, xr + V);
      T s = 0;
      for (int64_t j = 0; j < V; ++j) s += (yr[j] = std::exp(xr[j] - m));
      const T inv = T(1) / s;
      for (int64_t j = 0; j < V; ++j) yr[j] *= inv;
    }
  });
  out.set_backward({x}, [V, rows](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* yp = o.data();
    const T* g = o.grad().data();
    bool fresh = false;  // a gradient allocated just now is zeroed row by row, in cache
    T* dx = in.grad_data_fresh(fresh);
    parallel_for(rows, detail::row_grain(V), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* yr = yp + r * V;
        const T* gr = g + r * V;
        T dot = 0;
        for (int64_t j = 0; j < V; ++j) dot += gr[j] * yr[j];
        if (fresh) std::fill(dx + r * V, dx + (r + 1) * V, T(0));
        for (int64_t j = 0; j < V; ++j) dx[r * V + j] += yr[j] * (gr[j] - dot);
      }
    });
  });
  return out;
}

template <typename T>
TensorT<T> log_softmax(const TensorT<T>& x) {
  check_rows(x, "log_softmax");
  const int64_t V = x.dim(-1), rows = x.numel() / V;
  TensorT<T> out = TensorT<T>::empty(x.shape());
  log_softmax_rows(x.data(), out.data(), rows, V);
  out.set_backward({x}, [V, rows](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* yp = o.data();
    const T* g = o.grad().data();
    bool fresh = false;  // a gradient allocated just now is zeroed row by row, in cache
    T* dx = in.grad_data_fresh(fresh);
    parallel_for(rows, detail::row_grain(V), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T gs = 0;
        for (int64_t j = 0; j < V; ++j) gs += g[r * V + j];
        if (fresh) std::fill(dx + r * V, dx + (r + 1) * V, T(0));
        for (int64_t j = 0; j < V; ++j) dx[r * V + j] += g[r * V + j] - std::exp(yp[r * V + j]) * gs;
      }
    });
  });
  return out;
}

template <typename T>
TensorT<T> cross_entropy(const TensorT<T>& logits, const std::vector<int64_t>& targets, int64_t ignore_index) {
  VLM_CHECK(logits.ndim() == 2, "cross_entropy: logits must be [N, V], got " << shape_str(logits.shape()));
  const int64_t N = logits.dim(0), V = logits.dim(1);
  VLM_CHECK(static_cast<int64_t>(targets.size()) == N,
            "cross_entropy: " << targets.size() << " targets for " << N << " rows");
  int64_t count = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] == ignore_index) continue;
    VLM_CHECK(targets[i] >= 0 && targets[i] < V, "cross_entropy: target " << targets[i] << " at row " << i
                                                                          << " is outside [0, " << V << ")");
    ++count;
  }
  // log-probabilities are kept for backward (softmax = exp of them).
  auto logp = std::make_shared<std::vector<T>>(static_cast<std::size_t>(N * V));
  log_softmax_rows(logits.data(), logp->data(), N, V);
  double loss = 0;  // summed in double, in row order: deterministic and accurate
  for (int64_t r = 0; r < N; ++r) {
    const int64_t t = targets[static_cast<std::size_t>(r)];
    if (t != ignore_index) loss -= static_cast<double>((*logp)[static_cast<std::size_t>(r * V + t)]);
  }
  TensorT<T> out = TensorT<T>::full({}, static_cast<T>(count > 0 ? loss / static_cast<double>(count) : 0.0));
  out.set_backward({logits}, [logp, targets, ignore_index, count, V](const TensorT<T>& o) {
    if (count == 0) return;
    TensorT<T> in = o.input(0);
    const T g = o.grad().item() / static_cast<T>(count);
    bool fresh = false;  // a gradient allocated just now is zeroed row by row, in cache
    T* dx = in.grad_data_fresh(fresh);
    const auto rows = static_cast<int64_t>(targets.size());
    parallel_for(rows, detail::row_grain(V), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t t = targets[static_cast<std::size_t>(r)];
        if (fresh) std::fill(dx + r * V, dx + (r + 1) * V, T(0));
        if (t == ignore_index) continue;
        for (int64_t j = 0; j < V; ++j) dx[r * V + j] += g * std::exp((*logp)[static_cast<std::size_t>(r * V + j)]);
        dx[r * V + t] -= g;
      }
    });
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                                                  \
  template TensorT<T> softmax(const TensorT<T>&);                                           \
  template TensorT<T> log_softmax(const TensorT<T>&);                                       \
  template TensorT<T> cross_entropy(const TensorT<T>&, const std::vector<int64_t>&, int64_t);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
