// Rotary position embeddings (rotate-half layout): angle tables for 1-D, M-RoPE and vision 2-D
// RoPE, all built by rope_tables, and the fused rope op with its explicit backward.
#include "lib/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lib/core/parallel.h"

namespace vlm {

std::vector<float> rope_inv_freq(int64_t dim, double theta) {
  VLM_CHECK(dim > 0 && dim % 2 == 0, "rope_inv_freq: dim must be positive and even, got " << dim);
  VLM_CHECK(theta > 0.0, "rope_inv_freq: theta must be positive, got " << theta);
  // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
  std::vector<float> inv(static_cast<std::size_t>(dim / 2));
  const auto base = static_cast<float>(theta);
  for (std::size_t j = 0; j < inv.size(); ++j) {
    const float e = static_cast<float>(2 * j) / static_cast<float>(dim);
    inv[j] = 1.0f / std::pow(base, e);
  }
  return inv;
}

template <typename T>
RopeTables<T> rope_tables(const std::vector<int64_t>& positions, int64_t A, int64_t Bc, int64_t T_,
                          const std::vector<int>& axis_of, const std::vector<float>& inv_freq) {
  VLM_CHECK(A >= 1 && Bc >= 1 && T_ >= 0, "rope_tables: need A >= 1, Bc >= 1, T >= 0; got A "
                                              << A << ", Bc " << Bc << ", T " << T_);
  VLM_CHECK(static_cast<int64_t>(positions.size()) == A * Bc * T_,
            "rope_tables: positions has " << positions.size() << " entries, expected A*Bc*T = " << A
                                          << "*" << Bc << "*" << T_);
  VLM_CHECK(axis_of.size() == inv_freq.size(), "rope_tables: axis_of has "
                                                   << axis_of.size() << " entries but inv_freq has "
                                                   << inv_freq.size());
  for (std::size_t j = 0; j < axis_of.size(); ++j) {
    VLM_CHECK(axis_of[j] >= 0 && axis_of[j] < A, "rope_tables: axis_of["
                                                     << j << "] = " << axis_of[j]
                                                     << " is not in [0, " << A << ")");
  }
  const auto half = static_cast<int64_t>(inv_freq.size());
  const int64_t R = 2 * half;
  RopeTables<T> tab{TensorT<T>::empty({Bc, T_, R}), TensorT<T>::empty({Bc, T_, R})};
  T* c = tab.cos.data();
  T* s = tab.sin.data();
  for (int64_t b = 0; b < Bc; ++b) {
    for (int64_t t = 0; t < T_; ++t) {
      const int64_t row = (b * T_ + t) * R;
      for (int64_t j = 0; j < half; ++j) {
        const auto ju = static_cast<std::size_t>(j);
        const int64_t pos = positions[static_cast<std::size_t>((axis_of[ju] * Bc + b) * T_ + t)];
        // HF's freqs = inv_freq @ positions in fp32 (one product per entry), then cos/sin in fp32.
        const float angle = static_cast<float>(pos) * inv_freq[ju];
        const T cv = static_cast<T>(std::cos(angle));
        const T sv = static_cast<T>(std::sin(angle));
        c[row + j] = c[row + j + half] = cv;  // emb = cat(freqs, freqs)
        s[row + j] = s[row + j + half] = sv;
      }
    }
  }
  return tab;
}

template <typename T>
RopeTables<T> rope_tables_1d(const std::vector<int64_t>& positions, int64_t Bc, int64_t T_,
                             int64_t rot_dim, double theta) {
  const std::vector<float> inv = rope_inv_freq(rot_dim, theta);
  return rope_tables<T>(positions, 1, Bc, T_, std::vector<int>(inv.size(), 0), inv);
}

template <typename T>
RopeTables<T> mrope_tables(const std::vector<int64_t>& positions, int64_t B, int64_t T_,
                           int64_t head_dim, const std::vector<int64_t>& mrope_section,
                           double theta) {
  VLM_CHECK(mrope_section.size() == 3,
            "mrope_tables: mrope_section needs 3 entries (t, h, w), got " << mrope_section.size());
  int64_t total = 0;
  for (int64_t s : mrope_section) {
    VLM_CHECK(s >= 0, "mrope_tables: negative mrope_section entry " << s);
    total += s;
  }
  VLM_CHECK(total * 2 == head_dim, "mrope_tables: mrope_section ["
                                       << mrope_section[0] << ", " << mrope_section[1] << ", "
                                       << mrope_section[2] << "] sums to " << total
                                       << ", must equal head_dim/2 (" << head_dim << "/2)");
  const std::vector<float> inv = rope_inv_freq(head_dim, theta);
  // Frequency j belongs to chunk c (cumulative sections) and reads axis c: 0 = t, 1 = h, 2 = w.
  // HF splits cat(freqs, freqs) into mrope_section*2 chunks with chunk i reading axis i % 3,
  // which gives j and j + head_dim/2 the same axis.
  std::vector<int> axis_of;
  for (int c = 0; c < 3; ++c)
    axis_of.insert(axis_of.end(), static_cast<std::size_t>(mrope_section[c]), c);
  return rope_tables<T>(positions, 3, B, T_, axis_of, inv);
}

template <typename T>
RopeTables<T> vision_rope_tables(const std::vector<int64_t>& hpos, const std::vector<int64_t>& wpos,
                                 int64_t head_dim, double theta) {
  VLM_CHECK(hpos.size() == wpos.size(), "vision_rope_tables: " << hpos.size() << " h positions but "
                                                               << wpos.size() << " w positions");
  VLM_CHECK(head_dim > 0 && head_dim % 4 == 0,
            "vision_rope_tables: head_dim must be a positive multiple of 4, got " << head_dim);
  // VisionRotaryEmbedding(dim = head_dim/2): hd/4 frequencies, used once for h and once for w.
  const std::vector<float> inv = rope_inv_freq(head_dim / 2, theta);
  const std::size_t quarter = inv.size();
  std::vector<int> axis_of(quarter, 0);
  axis_of.insert(axis_of.end(), quarter, 1);
  std::vector<float> inv2 = inv;
  inv2.insert(inv2.end(), inv.begin(), inv.end());
  std::vector<int64_t> positions = hpos;  // [2, 1, N]
  positions.insert(positions.end(), wpos.begin(), wpos.end());
  return rope_tables<T>(positions, 2, 1, static_cast<int64_t>(hpos.size()), axis_of, inv2);
}

template <typename T>
TensorT<T> rope(const TensorT<T>& x, const TensorT<T>& cos, const TensorT<T>& sin) {
  VLM_CHECK(x.ndim() == 4, "rope: x must be [B, T, H, D], got " << shape_str(x.shape()));
  VLM_CHECK(cos.ndim() == 3 && cos.shape() == sin.shape(),
            "rope: cos and sin must be [Bc, T, R] and equal; got cos "
                << shape_str(cos.shape()) << ", sin " << shape_str(sin.shape()));
  const int64_t B = x.dim(0), T_ = x.dim(1), H = x.dim(2), D = x.dim(3);
  const int64_t Bc = cos.dim(0), R = cos.dim(2);
  VLM_CHECK((Bc == 1 || Bc == B) && cos.dim(1) == T_,
            "rope: table " << shape_str(cos.shape()) << " does not fit x " << shape_str(x.shape())
                           << " (need Bc = 1 or B, and the same T)");
  VLM_CHECK(R % 2 == 0 && R <= D,
            "rope: rotary width " << R << " must be even and <= head dim " << D);
  const int64_t half = R / 2;

  // Runs f(x_row, out_row, cos_row, sin_row) over every (b, t, h) head vector.
  auto for_rows = [=](const T* in, T* out_p, const T* cp, const T* sp, auto&& f) {
    parallel_for(B * T_, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, H * D)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t bt = begin; bt < end; ++bt) {
                     const int64_t b = bt / T_, t = bt % T_;
                     const int64_t trow = ((Bc == 1 ? 0 : b) * T_ + t) * R;
                     for (int64_t h = 0; h < H; ++h) {
                       const int64_t off = (bt * H + h) * D;
                       f(in + off, out_p + off, cp + trow, sp + trow);
                     }
                   }
                 });
  };

  TensorT<T> out = TensorT<T>::empty(x.shape());
  // out = x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x2, x1); dims >= R pass through.
  for_rows(x.data(), out.data(), cos.data(), sin.data(),
           [half, R, D](const T* xr, T* yr, const T* c, const T* s) {
             for (int64_t j = 0; j < half; ++j) {
               yr[j] = xr[j] * c[j] + (-xr[j + half]) * s[j];
               yr[j + half] = xr[j + half] * c[j + half] + xr[j] * s[j + half];
             }
             for (int64_t j = R; j < D; ++j) yr[j] = xr[j];
           });

  // cos/sin get no gradient: they are constants of the positions, captured rather than inputs.
  out.set_backward({x}, [cos, sin, for_rows, half, R, D](const TensorT<T>& o) {
    TensorT<T> xt = o.input(0);
    const TensorT<T> dy = o.grad();
    bool fresh = false;  // every element is written: a gradient allocated just now is set
    T* dxp = xt.grad_data_fresh(fresh);
    for_rows(dy.data(), dxp, cos.data(), sin.data(),
             [half, R, D, fresh](const T* g, T* dx, const T* c, const T* s) {
               if (fresh) std::fill(dx, dx + D, T(0));
               for (int64_t j = 0; j < half; ++j) {
                 dx[j] += g[j] * c[j] + g[j + half] * s[j + half];
                 dx[j + half] += g[j + half] * c[j + half] - g[j] * s[j];
               }
               for (int64_t j = R; j < D; ++j) dx[j] += g[j];
             });
  });
  return out;
}

#define VLM_INSTANTIATE_ROPE(T)                                                                    \
  template RopeTables<T> rope_tables<T>(const std::vector<int64_t>&, int64_t, int64_t, int64_t,    \
                                        const std::vector<int>&, const std::vector<float>&);       \
  template RopeTables<T> rope_tables_1d<T>(const std::vector<int64_t>&, int64_t, int64_t, int64_t, \
                                           double);                                                \
  template RopeTables<T> mrope_tables<T>(const std::vector<int64_t>&, int64_t, int64_t, int64_t,   \
                                         const std::vector<int64_t>&, double);                     \
  template RopeTables<T> vision_rope_tables<T>(const std::vector<int64_t>&,                        \
                                               const std::vector<int64_t>&, int64_t, double);      \
  template TensorT<T> rope<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&);

VLM_INSTANTIATE_ROPE(float)
VLM_INSTANTIATE_ROPE(double)
#undef VLM_INSTANTIATE_ROPE

}  // namespace vlm
