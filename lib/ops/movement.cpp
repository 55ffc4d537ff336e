// Movement ops: reshape shares data (cheap); permute, slice, concat and broadcast_to copy into a
// new contiguous tensor (every tensor is contiguous, which keeps every kernel simple).
#include <algorithm>
#include <cstring>
#include <numeric>

#include "lib/core/parallel.h"
#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {

template <typename T>
TensorT<T> reshape(const TensorT<T>& x, const Shape& shape) {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      VLM_CHECK(infer < 0, "reshape: more than one -1 in " << shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    VLM_CHECK(known > 0 && x.numel() % known == 0,
              "reshape: cannot infer -1 in " << shape_str(shape) << " for " << x.numel() << " elements");
    s[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  VLM_CHECK(numel_of(s) == x.numel(),
            "reshape: " << shape_str(x.shape()) << " has " << x.numel() << " elements, " << shape_str(shape)
                        << " needs " << numel_of(s));
  TensorT<T> out = TensorT<T>::view_of(x, s);
  out.set_backward({x}, [](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    in.accumulate_grad(o.grad());
  });
  return out;
}

template <typename T>
TensorT<T> permute(const TensorT<T>& x, const std::vector<int>& dims) {
  const int nd = x.ndim();
  VLM_CHECK(static_cast<int>(dims.size()) == nd, "permute: " << dims.size() << " dims for a " << nd << "-D tensor");
  std::vector<int> p(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    p[i] = detail::normalize_axis(dims[i], nd);
    VLM_CHECK(!seen[static_cast<std::size_t>(p[i])], "permute: repeated dim " << dims[i]);
    seen[static_cast<std::size_t>(p[i])] = true;
  }
  const Shape& in_shape = x.shape();
  Shape out_shape(dims.size());
  std::vector<int64_t> in_stride(dims.size());
  {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; --i) {
      in_stride[static_cast<std::size_t>(i)] = s;
      s *= in_shape[static_cast<std::size_t>(i)];
    }
  }
  std::vector<int64_t> src_stride(dims.size());  // stride in x for each output dim
  for (std::size_t i = 0; i < p.size(); ++i) {
    out_shape[i] = in_shape[static_cast<std::size_t>(p[i])];
    src_stride[i] = in_stride[static_cast<std::size_t>(p[i])];
  }
  // The output in rows of its last dimension: row r starts at row_offs[r] in x and steps by s_in
  // there (1 when the last dimension stays last: the row is one contiguous copy).
  const int64_t n = x.numel();
  const int64_t inner = nd == 0 ? 1 : out_shape.back();
  const int64_t s_in = nd == 0 ? 1 : src_stride.back();
  const int64_t rows = inner == 0 ? 0 : n / inner;
  std::vector<int64_t> row_offs(static_cast<std::size_t>(rows));
  std::vector<int64_t> idx(dims.size(), 0);
  const std::size_t outer_dims = dims.empty() ? 0 : dims.size() - 1;
  int64_t off = 0;
  for (int64_t r = 0; r < rows; ++r) {
    row_offs[static_cast<std::size_t>(r)] = off;
    for (std::size_t d = outer_dims; d-- > 0;) {
      if (++idx[d] < out_shape[d]) {
        off += src_stride[d];
        break;
      }
      off -= src_stride[d] * (out_shape[d] - 1);
      idx[d] = 0;
    }
  }
  TensorT<T> out = TensorT<T>::empty(out_shape);
  const T* xp = x.data();
  T* y = out.data();
  const int64_t grain = std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(inner, 1));
  parallel_for(rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* src = xp + row_offs[static_cast<std::size_t>(r)];
      T* dst = y + r * inner;
      if (s_in == 1) {
        std::copy(src, src + inner, dst);
      } else {
        for (int64_t k = 0; k < inner; ++k) dst[k] = src[k * s_in];
      }
    }
  });
  out.set_backward({x}, [row_offs = std::move(row_offs), inner, s_in, grain](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const TensorT<T> gt = o.grad();
    const T* g = gt.data();
    // A permutation: every element of x is written by exactly one row, so rows split freely, and a
    // gradient allocated just now is set rather than zeroed and added to.
    bool fresh = false;
    T* dx = in.grad_data_fresh(fresh);
    parallel_for(static_cast<int64_t>(row_offs.size()), grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T* dst = dx + row_offs[static_cast<std::size_t>(r)];
        const T* src = g + r * inner;
        if (fresh) {
          for (int64_t k = 0; k < inner; ++k) dst[k * s_in] = src[k];
        } else {
          for (int64_t k = 0; k < inner; ++k) dst[k * s_in] += src[k];
        }
      }
    });
  });
  return out;
}

template <typename T>
TensorT<T> transpose(const TensorT<T>& x, int a, int b) {
  std::vector<int> dims(static_cast<std::size_t>(x.ndim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<std::size_t>(detail::normalize_axis(a, x.ndim()))],
            dims[static_cast<std::size_t>(detail::normalize_axis(b, x.ndim()))]);
  return permute(x, dims);
}

template <typename T>
TensorT<T> slice(const TensorT<T>& x, int axis, int64_t start, int64_t end) {
  const detail::AxisView v = detail::axis_view(x.shape(), axis);
  VLM_CHECK(0 <= start && start <= end && end <= v.n,
            "slice [" << start << ", " << end << ") out of range for axis " << axis << " of " << shape_str(x.shape()));
  Shape s = x.shape();
  s[static_cast<std::size_t>(detail::normalize_axis(axis, x.ndim()))] = end - start;
  TensorT<T> out = TensorT<T>::empty(s);
  const int64_t len = (end - start) * v.inner;
  const int64_t grain = std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(v.n * v.inner, 1));
  const T* xp = x.data();
  T* y = out.data();
  parallel_for(v.outer, grain, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      std::memcpy(y + o * len, xp + (o * v.n + start) * v.inner, static_cast<std::size_t>(len) * sizeof(T));
  });
  out.set_backward({x}, [v, start, len, grain](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const TensorT<T> gt = o.grad();
    const T* g = gt.data();
    // A gradient allocated just now gets the slice's part copied and zeros around it.
    bool fresh = false;
    T* dx = in.grad_data_fresh(fresh);
    const int64_t row = v.n * v.inner, before = start * v.inner;
    parallel_for(v.outer, grain, [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a) {
        T* d = dx + a * row;
        const T* s2 = g + a * len;
        if (fresh) {
          std::fill(d, d + before, T(0));
          std::fill(d + before + len, d + row, T(0));
        }
        detail::set_or_add(d + before, 0, len, fresh, [&](int64_t i) { return s2[i]; });
      }
    });
  });
  return out;
}

template <typename T>
TensorT<T> concat(const Tensors<T>& xs, int axis) {
  VLM_CHECK(!xs.empty(), "concat of no tensors");
  const int nd = xs[0].ndim();
  const int a = detail::normalize_axis(axis, nd);
  Shape s = xs[0].shape();
  int64_t total = 0;
  for (const auto& t : xs) {
    Shape ts = t.shape();
    VLM_CHECK(t.ndim() == nd, "concat: " << shape_str(ts) << " vs " << shape_str(s));
    total += ts[static_cast<std::size_t>(a)];
    ts[static_cast<std::size_t>(a)] = s[static_cast<std::size_t>(a)];
    VLM_CHECK(ts == s, "concat along axis " << axis << ": shapes " << shape_str(t.shape()) << " and "
                                            << shape_str(xs[0].shape()) << " differ elsewhere");
  }
  s[static_cast<std::size_t>(a)] = total;
  const detail::AxisView v = detail::axis_view(s, a);
  TensorT<T> out = TensorT<T>::empty(s);
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const auto& t : xs) {
    const int64_t n = t.dim(a);
    starts.push_back(at);
    for (int64_t o = 0; o < v.outer; ++o)
      std::memcpy(out.data() + (o * total + at) * v.inner, t.data() + o * n * v.inner,
                  static_cast<std::size_t>(n * v.inner) * sizeof(T));
    at += n;
  }
  out.set_backward(xs, [v, starts, total, a](const TensorT<T>& o) {
    const TensorT<T> gt = o.grad();
    const T* g = gt.data();
    for (std::size_t k = 0; k < o.num_inputs(); ++k) {  // in input order: concat({t, t}) sums in order
      TensorT<T> in = o.input(k);
      if (!in.requires_grad()) continue;
      const int64_t n = in.dim(a);
      bool fresh = false;  // each input's gradient is covered whole: set when allocated just now
      T* dx = in.grad_data_fresh(fresh);
      const int64_t grain = std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(n * v.inner, 1));
      parallel_for(v.outer, grain, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const T* src = g + (q * total + starts[k]) * v.inner;
          T* dst = dx + q * n * v.inner;
          detail::set_or_add(dst, 0, n * v.inner, fresh, [&](int64_t i) { return src[i]; });
        }
      });
    }
  });
  return out;
}

template <typename T>
TensorT<T> broadcast_to(const TensorT<T>& x, const Shape& shape) {
  const std::vector<int64_t> offs = detail::broadcast_offsets(shape, x.shape());
  TensorT<T> out = TensorT<T>::empty(shape);
  for (std::size_t e = 0; e < offs.size(); ++e) out.data()[e] = x.data()[offs[e]];
  out.set_backward({x}, [offs](const TensorT<T>& o) {
    TensorT<T> in = o.input(0);
    const T* g = o.grad().data();
    T* dx = in.grad_data();
    for (std::size_t e = 0; e < offs.size(); ++e) dx[offs[e]] += g[e];
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                                    \
  template TensorT<T> reshape(const TensorT<T>&, const Shape&);               \
  template TensorT<T> permute(const TensorT<T>&, const std::vector<int>&);    \
  template TensorT<T> transpose(const TensorT<T>&, int, int);                 \
  template TensorT<T> slice(const TensorT<T>&, int, int64_t, int64_t);        \
  template TensorT<T> concat(const Tensors<T>&, int);                         \
  template TensorT<T> broadcast_to(const TensorT<T>&, const Shape&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
