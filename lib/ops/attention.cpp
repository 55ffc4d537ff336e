// Scaled dot-product attention: per (batch, head) two BLAS GEMMs over strided head views, a masked
// softmax in between, and an explicit backward. One kernel (raw pointers + batch strides) serves
// both attention() and KvCache::attend(). Threads split the (batch, head) loop, so the GEMMs run
// serially (gemm_serial), and they count their FLOPs: 2·Tq·Tk·(D + Dv) per head forward, twice
// that backward. Without gradients (inference) the forward is fused with an online softmax over
// key blocks, so no Tq×Tk score matrix exists at all (attention_forward_online).
#include "lib/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "lib/core/parallel.h"
#include "lib/ops/gemm.h"

namespace vlm {
namespace {

// Sizes and raw views of one attention call. Rows of q/k/v/out are tokens; within a row the heads
// are contiguous, so head h of batch b is a matrix with leading dimension H·D.
template <typename T>
struct AttnProblem {
  int64_t B = 0, Tq = 0, Tk = 0, Hq = 0, Hkv = 0, D = 0, Dv = 0;
  const T* q = nullptr;  // [B, Tq, Hq, D], batch stride q_bs
  const T* k = nullptr;  // [B, Tk, Hkv, D], batch stride k_bs (a cache's stride is cap·Hkv·D)
  const T* v = nullptr;  // [B, Tk, Hkv, Dv], batch stride v_bs
  int64_t q_bs = 0, k_bs = 0, v_bs = 0;
  const AttnMask* mask = nullptr;
  bool causal = false;
  T scale = T(1);
  int64_t per_head = 0;  // elements of one head's score matrix: prob_size(mask->segments, Tq, Tk)

  // Causal queries never see a key past i + (Tk - Tq), so their rows are processed in tiles whose
  // GEMMs stop at the tile's last visible key: about half the work for a square mask.
  int64_t tile_rows() const { return causal ? kCausalTile : std::max<int64_t>(Tq, 1); }
  // Keys [0, end) cover every key visible to the rows [0, i_end).
  int64_t key_end(int64_t i_end) const {
    return causal ? std::clamp<int64_t>(i_end + Tk - Tq, 0, Tk) : Tk;
  }
  static constexpr int64_t kCausalTile = 64;

  // Heads per thread chunk at least, for tasks of `heads_per_task` query heads (x2 backward): a
  // thread is only worth waking for about kMinChunkFlops of GEMM work (a decode step's attention
  // is a few thousand FLOPs per head). Depends only on the sizes.
  int64_t head_grain(int64_t heads_per_task) const {
    const int64_t per_task = std::max<int64_t>(1, 2 * Tq * Tk * (D + Dv) * heads_per_task);
    return std::max<int64_t>(1, kMinChunkFlops / per_task);
  }
  static constexpr int64_t kMinChunkFlops = int64_t{1} << 18;

  // Calls f(i0, i1, kb, ke, at, ld) for every tile of query rows [i0, i1) with the keys [kb, ke)
  // they may see: row tiles of each segment (mask->segments; one segment when empty), keys within
  // the segment and, when causal, up to the tile's last visible key. A fixed order. `at` and `ld`
  // place the tile's scores in a head's score matrix (prob_size() elements): element (i, j) of the
  // tile lies at at + (i - i0) * ld + (j - kb). Without segments that matrix is [Tq, Tk]; with
  // segments it holds only the diagonal blocks, one after another, so a batch of images packed
  // into one sequence keeps about len² scores per image instead of (sum of len)².
  template <class F>
  void for_each_tile(const std::vector<int64_t>& segments, F&& f) const {
    auto run = [&](int64_t r0, int64_t r1, int64_t k0, int64_t k1, int64_t base, int64_t ld) {
      for (int64_t i0 = r0; i0 < r1; i0 += tile_rows()) {
        const int64_t i1 = std::min(r1, i0 + tile_rows());
        f(i0, i1, k0, std::min(k1, key_end(i1)), base + (i0 - r0) * ld, ld);
      }
    };
    if (segments.empty()) return run(0, Tq, 0, Tk, 0, Tk);
    each_block(segments, Tk, [&](int64_t start, int64_t len, int64_t base, int64_t ld) {
      run(start, start + len, start, start + len, base, ld);
    });
  }
  // Elements of one head's score matrix as for_each_tile lays it out (a multiple-of-kPacket
  // remainder equal to Tq·Tk's, so heads start at the addresses they would in [Tq, Tk] modulo it).
  static int64_t prob_size(const std::vector<int64_t>& segments, int64_t Tq, int64_t Tk) {
    if (segments.empty()) return Tq * Tk;
    const int64_t end = each_block(segments, Tk, [](int64_t, int64_t, int64_t, int64_t) {});
    return congruent_from(end, Tq * Tk);
  }
  // The diagonal blocks' places: g(start, len, base, ld) per segment; returns the elements used.
  // Each row of a block starts at the address modulo kPacket it has in the full [Tq, Tk] matrix
  // (ld ≡ Tk, base ≡ start·Tk + start): the softmax and row sums (Eigen reductions) begin their
  // vector loops at the first aligned element, so the same address modulo the packet gives the
  // same sums, bit for bit, as the full matrix did.
  template <class G>
  static int64_t each_block(const std::vector<int64_t>& segments, int64_t Tk, G&& g) {
    int64_t start = 0, used = 0;  // Tq == Tk (check_mask): rows and keys share the segment bounds
    for (const int64_t len : segments) {
      const int64_t ld = congruent_from(len, Tk), base = congruent_from(used, start * Tk + start);
      g(start, len, base, ld);
      used = base + len * ld;
      start += len;
    }
    return used;
  }
  static constexpr int64_t kPacket = 16;  // elements: the widest SIMD packet (AVX-512, float)
  // The smallest x >= lo with x ≡ target (mod kPacket).
  static int64_t congruent_from(int64_t lo, int64_t target) {
    return lo + (((target - lo) % kPacket) + kPacket) % kPacket;
  }
};

void check_mask(const AttnMask& mask, int64_t B, int64_t Tq, int64_t Tk) {
  if (!mask.segments.empty()) {
    int64_t total = 0;
    for (const int64_t len : mask.segments) {
      VLM_CHECK(len >= 0, "attention: negative segment length " << len);
      total += len;
    }
    VLM_CHECK(Tq == Tk && total == Tk, "attention: segments sum to " << total << ", but block-diagonal attention needs "
                                                                     << "Tq == Tk == that sum; got Tq " << Tq
                                                                     << ", Tk " << Tk);
  }
  VLM_CHECK(mask.key_valid.empty() || static_cast<int64_t>(mask.key_valid.size()) == B * Tk,
            "attention: key_valid has " << mask.key_valid.size() << " entries, expected B*Tk = "
                                        << B << "*" << Tk << " = " << B * Tk);
  if (!mask.allowed.empty()) {
    VLM_CHECK(mask.allowed_batch == 1 || mask.allowed_batch == B,
              "attention: allowed_batch must be 1 or B = " << B << ", got " << mask.allowed_batch);
    VLM_CHECK(static_cast<int64_t>(mask.allowed.size()) == mask.allowed_batch * Tq * Tk,
              "attention: allowed mask has " << mask.allowed.size() << " entries, expected "
                                             << "allowed_batch*Tq*Tk = " << mask.allowed_batch
                                             << "*" << Tq << "*" << Tk);
  }
}

// Turns one row of scaled scores s[0, Tk) into probabilities in place. Keys at or past key_end
// (causal) or cleared in key_valid/allowed (either may be null) get exactly 0; a row with no
// visible key becomes all zeros, so its output and gradients are zero, never NaN.
template <typename T>
void masked_softmax_row(T* s, int64_t Tk, int64_t key_end, const uint8_t* key_valid,
                        const uint8_t* allowed) {
  typename TensorT<T>::Map row(s, key_end);
  std::fill(s + key_end, s + Tk, T(0));
  const bool masked = key_valid != nullptr || allowed != nullptr;
  auto visible = [&](int64_t j) {
    return (key_valid == nullptr || key_valid[j] != 0) && (allowed == nullptr || allowed[j] != 0);
  };
  T mx = -std::numeric_limits<T>::infinity();
  if (masked) {
    for (int64_t j = 0; j < key_end; ++j) {
      if (visible(j)) mx = std::max(mx, s[j]);
    }
  } else if (key_end > 0) {
    mx = row.maxCoeff();
  }
  if (mx == -std::numeric_limits<T>::infinity()) {  // no visible key
    row.setZero();
    return;
  }
  row = (row - mx).exp();  // vectorised; masked keys are zeroed next (exp never gives exact 0)
  if (masked) {
    for (int64_t j = 0; j < key_end; ++j) {
      if (!visible(j)) s[j] = T(0);
    }
  }
  row *= T(1) / row.sum();
}

// Forward without probabilities (inference: prefill, decode, no-grad forward), flash-attention
// style: per row tile (kOnlineRows query rows of one segment), keys in blocks of kOnlineKeys, each
// row keeping its running max and sum (online softmax) and its output rescaled as the max grows.
// Scratch is one kOnlineRows × kOnlineKeys score block per thread, whatever Tq and Tk are. A row
// with no visible key stays all zeros. Mathematically the softmax of the kept-probabilities path;
// in floating point equal to rounding.
constexpr int64_t kOnlineRows = 64, kOnlineKeys = 512;

// One (batch, head) of a forward problem: where its q, k, v and output rows start, its key-padding
// row and its rows of the allowed matrix (null where the mask has none), and the row strides.
template <typename T>
struct HeadRows {
  int64_t ldq, ldk, ldv, ldo;
  const T *q, *k, *v;
  T* o;
  const uint8_t *key_valid, *allowed;
  HeadRows(const AttnProblem<T>& p, T* out, int64_t bh)
      : ldq(p.Hq * p.D), ldk(p.Hkv * p.D), ldv(p.Hkv * p.Dv), ldo(p.Hq * p.Dv) {
    const AttnMask& mask = *p.mask;
    const int64_t b = bh / p.Hq, h = bh % p.Hq, g = h / (p.Hq / p.Hkv);
    q = p.q + b * p.q_bs + h * p.D;
    k = p.k + b * p.k_bs + g * p.D;
    v = p.v + b * p.v_bs + g * p.Dv;
    o = out + b * p.Tq * ldo + h * p.Dv;
    key_valid = mask.key_valid.empty() ? nullptr : mask.key_valid.data() + b * p.Tk;
    allowed = mask.allowed.empty() ? nullptr
                                   : mask.allowed.data() + (mask.allowed_batch == 1 ? 0 : b) * p.Tq * p.Tk;
  }
};

template <typename T>
void attention_forward_online(const AttnProblem<T>& p, T* out) {
  const AttnMask& mask = *p.mask;
  parallel_for(p.B * p.Hq, p.head_grain(1), [&](int64_t begin, int64_t end) {
    // Score block [rows, kn]: no bigger than the problem (a decode step needs one short row).
    const int64_t rows_max = std::min(kOnlineRows, p.Tq), kn = std::min(kOnlineKeys, p.Tk);
    Buffer<T> scores(rows_max * kn, MemCat::kActivations, false);
    std::vector<T> row_max(static_cast<std::size_t>(rows_max)), row_sum(static_cast<std::size_t>(rows_max));
    for (int64_t bh = begin; bh < end; ++bh) {
      const HeadRows<T> hr(p, out, bh);
      const int64_t ldq = hr.ldq, ldk = hr.ldk, ldv = hr.ldv, ldo = hr.ldo;
      const T *qh = hr.q, *kh = hr.k, *vh = hr.v;
      T* oh = hr.o;
      const uint8_t *kv_row = hr.key_valid, *al_b = hr.allowed;
      // Rows [r0, r1) see keys [k0, k1) (their segment), further cut by the causal bound.
      auto run = [&](int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
        for (int64_t i0 = r0; i0 < r1; i0 += kOnlineRows) {
          const int64_t i1 = std::min(r1, i0 + kOnlineRows), m = i1 - i0;
          for (int64_t i = i0; i < i1; ++i) std::fill_n(oh + i * ldo, p.Dv, T(0));
          std::fill_n(row_max.begin(), m, -std::numeric_limits<T>::infinity());
          std::fill_n(row_sum.begin(), m, T(0));
          const int64_t ke = std::min(k1, p.key_end(i1));
          for (int64_t kb = k0; kb < ke; kb += kn) {
            const int64_t n = std::min(kn, ke - kb);
            T* st = scores.data();  // [m, n], row stride kn
            gemm_serial(false, true, m, n, p.D, p.scale, qh + i0 * ldq, ldq, kh + kb * ldk, ldk, T(0), st, kn);
            for (int64_t r = 0; r < m; ++r) {
              const int64_t i = i0 + r;
              T* sr = st + r * kn;
              // Keys of this block row i sees: [kb, kb + vis), less the masked ones.
              const int64_t vis = std::clamp<int64_t>(std::min(kb + n, p.key_end(i + 1)) - kb, 0, n);
              const uint8_t* kvr = kv_row != nullptr ? kv_row + kb : nullptr;
              const uint8_t* alr = al_b != nullptr ? al_b + i * p.Tk + kb : nullptr;
              auto visible = [&](int64_t j) {
                return (kvr == nullptr || kvr[j] != 0) && (alr == nullptr || alr[j] != 0);
              };
              const bool masked = kvr != nullptr || alr != nullptr;
              typename TensorT<T>::Map pr(sr, vis);
              T bmax = -std::numeric_limits<T>::infinity();
              if (!masked) {
                if (vis > 0) bmax = pr.maxCoeff();
              } else {
                for (int64_t j = 0; j < vis; ++j)
                  if (visible(j)) bmax = std::max(bmax, sr[j]);
              }
              if (bmax == -std::numeric_limits<T>::infinity()) {  // nothing visible here: no update
                std::fill_n(sr, n, T(0));
                continue;
              }
              const T m_new = std::max(row_max[static_cast<std::size_t>(r)], bmax);
              const T corr = std::exp(row_max[static_cast<std::size_t>(r)] - m_new);  // 0 on the first block
              row_max[static_cast<std::size_t>(r)] = m_new;
              pr = (pr - m_new).exp();
              if (masked) {
                for (int64_t j = 0; j < vis; ++j)
                  if (!visible(j)) sr[j] = T(0);
              }
              std::fill(sr + vis, sr + n, T(0));
              row_sum[static_cast<std::size_t>(r)] = row_sum[static_cast<std::size_t>(r)] * corr + pr.sum();
              if (corr != T(1)) {
                typename TensorT<T>::Map o(oh + i * ldo, p.Dv);
                o *= corr;
              }
            }
            // O += P V[kb, kb + n)
            gemm_serial(false, false, m, p.Dv, n, T(1), st, kn, vh + kb * ldv, ldv, T(1), oh + i0 * ldo, ldo);
          }
          for (int64_t r = 0; r < m; ++r) {
            const T l = row_sum[static_cast<std::size_t>(r)];
            if (l > T(0)) {
              typename TensorT<T>::Map o(oh + (i0 + r) * ldo, p.Dv);
              o *= T(1) / l;
            }
          }
        }
      };
      if (mask.segments.empty()) {
        run(0, p.Tq, 0, p.Tk);
      } else {
        int64_t start = 0;  // Tq == Tk (check_mask): rows and keys share the segment bounds
        for (const int64_t len : mask.segments) {
          run(start, start + len, start, start + len);
          start += len;
        }
      }
    }
  });
}

// Forward over every (b, h): out [B, Tq, Hq, Dv] (contiguous). probs [B, Hq, prob_size] is filled when
// non-null (kept for backward). Without it, scores no bigger than one online block (a prefill of a
// few dozen tokens, a decode step) go through one per-thread Tq×Tk scratch, which costs less
// bookkeeping for tiny segments; larger ones through the online-softmax forward above.
template <typename T>
void attention_forward(const AttnProblem<T>& p, T* out, T* probs) {
  if (probs == nullptr && p.Tq * p.Tk > kOnlineRows * kOnlineKeys) {
    attention_forward_online(p, out);
    return;
  }
  const AttnMask& mask = *p.mask;
  const int64_t per_head = p.per_head;
  parallel_for(p.B * p.Hq, p.head_grain(1), [&](int64_t begin, int64_t end) {
    std::unique_ptr<Buffer<T>> scratch;  // per-thread scores when probabilities are not kept (small)
    if (probs == nullptr) scratch = std::make_unique<Buffer<T>>(per_head, MemCat::kActivations, false);
    for (int64_t bh = begin; bh < end; ++bh) {
      const HeadRows<T> hr(p, out, bh);
      const int64_t ldq = hr.ldq, ldk = hr.ldk, ldv = hr.ldv, ldo = hr.ldo;
      const T *qh = hr.q, *kh = hr.k, *vh = hr.v;
      T* oh = hr.o;
      T* s = probs != nullptr ? probs + bh * per_head : scratch->data();
      const uint8_t *kv_row = hr.key_valid, *al_b = hr.allowed;
      p.for_each_tile(mask.segments, [&](int64_t i0, int64_t i1, int64_t kb, int64_t ke, int64_t at, int64_t ld) {
        const int64_t m = i1 - i0;
        T* st = s + at;  // the tile's scores, from key kb (row stride ld)
        if (ke <= kb) {  // no key visible to any row of the tile
          for (int64_t i = i0; i < i1; ++i) std::fill_n(oh + i * ldo, p.Dv, T(0));
          return;
        }
        // S = scale · Q K[kb, ke)ᵀ  [m, ke - kb]
        gemm_serial(false, true, m, ke - kb, p.D, p.scale, qh + i0 * ldq, ldq, kh + kb * ldk, ldk, T(0), st, ld);
        for (int64_t i = i0; i < i1; ++i) {
          masked_softmax_row(st + (i - i0) * ld, ke - kb, std::max(kb, std::min(ke, p.key_end(i + 1))) - kb,
                             kv_row != nullptr ? kv_row + kb : nullptr,
                             al_b != nullptr ? al_b + i * p.Tk + kb : nullptr);
        }
        // O = P V[kb, ke), written straight into out's head slice  [m, Dv]
        gemm_serial(false, false, m, p.Dv, ke - kb, T(1), st, ld, vh + kb * ldv, ldv, T(0), oh + i0 * ldo, ldo);
      });
    }
  });
}

template <typename T>
void check_qkv(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v, const char* who) {
  VLM_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4,
            who << ": q, k, v must be [B, T, H, D]; got q " << shape_str(q.shape()) << ", k "
                << shape_str(k.shape()) << ", v " << shape_str(v.shape()));
  VLM_CHECK(q.dim(0) == k.dim(0) && k.dim(0) == v.dim(0),
            who << ": batch sizes differ: q " << shape_str(q.shape()) << ", k "
                << shape_str(k.shape()) << ", v " << shape_str(v.shape()));
  VLM_CHECK(k.dim(1) == v.dim(1) && k.dim(2) == v.dim(2),
            who << ": k and v must have the same length and heads: k " << shape_str(k.shape())
                << ", v " << shape_str(v.shape()));
  VLM_CHECK(q.dim(3) == k.dim(3),
            who << ": q head dim " << q.dim(3) << " != k head dim " << k.dim(3));
  VLM_CHECK(q.dim(3) > 0 && v.dim(3) > 0, who << ": head dims must be positive");
  VLM_CHECK(k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0, who << ": query heads (" << q.dim(2)
                                                          << ") must be a multiple of kv heads ("
                                                          << k.dim(2) << ")");
}

}  // namespace

AttnMask block_diagonal_mask(const std::vector<int64_t>& segment_lengths) {
  for (int64_t len : segment_lengths) VLM_CHECK(len >= 0, "block_diagonal_mask: negative segment length " << len);
  AttnMask m;
  m.segments = segment_lengths;
  return m;
}

template <typename T>
TensorT<T> attention(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v,
                     const AttnMask& mask, double scale) {
  check_qkv(q, k, v, "attention");
  AttnProblem<T> p;
  p.B = q.dim(0), p.Tq = q.dim(1), p.Hq = q.dim(2), p.D = q.dim(3);
  p.Tk = k.dim(1), p.Hkv = k.dim(2), p.Dv = v.dim(3);
  check_mask(mask, p.B, p.Tq, p.Tk);
  p.q = q.data(), p.k = k.data(), p.v = v.data();
  p.q_bs = p.Tq * p.Hq * p.D, p.k_bs = p.Tk * p.Hkv * p.D, p.v_bs = p.Tk * p.Hkv * p.Dv;
  p.mask = &mask;
  p.causal = mask.causal;
  p.scale = static_cast<T>(scale);
  p.per_head = AttnProblem<T>::prob_size(mask.segments, p.Tq, p.Tk);

  TensorT<T> out = TensorT<T>::empty({p.B, p.Tq, p.Hq, p.Dv});
  if (p.Tk == 0 || out.numel() == 0) {
    // Nothing to attend to: every row is fully masked, so output and gradients are zero. The empty
    // closure keeps `out` in the graph like any other op output.
    out.vec().setZero();
    out.set_backward({q, k, v}, [](const TensorT<T>&) {});
    return out;
  }
  const bool keep = grad_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  TensorT<T> probs;  // [B, Hq, one head's scores as for_each_tile lays them out]
  if (keep) probs = TensorT<T>::empty({p.B, p.Hq, p.per_head});
  attention_forward(p, out.data(), keep ? probs.data() : nullptr);
  if (!keep) return out;

  p.q = p.k = p.v = nullptr;  // the closure reads its inputs' data, and the mask is not kept
  p.mask = nullptr;
  out.set_backward({q, k, v}, [probs, p, segments = mask.segments](const TensorT<T>& o) {
    TensorT<T> qt = o.input(0), kt = o.input(1), vt = o.input(2);
    const bool need_q = qt.requires_grad(), need_k = kt.requires_grad(),
               need_v = vt.requires_grad();
    const bool need_ds = need_q || need_k;
    const int64_t rep = p.Hq / p.Hkv;
    const int64_t Tq = p.Tq, Tk = p.Tk, D = p.D, Dv = p.Dv, Hq = p.Hq, Hkv = p.Hkv;
    const T sc = p.scale;
    const T* qd = qt.data();
    const T* kd = kt.data();
    const T* vd = vt.data();
    const TensorT<T> dout_t = o.grad();  // shares the gradient buffer, no copy
    const T* dout = dout_t.data();
    const T* pd = probs.data();
    // Gradients allocated just now are zeroed by the task that owns each part of them, in its own
    // cache, instead of by this thread beforehand (not when two of q, k, v are one tensor).
    const bool distinct = !qt.same_node(kt) && !qt.same_node(vt) && !kt.same_node(vt);
    bool fresh_q = false, fresh_k = false, fresh_v = false;
    T* dq = need_q ? (distinct ? qt.grad_data_fresh(fresh_q) : qt.grad_data()) : nullptr;
    T* dk = need_k ? (distinct ? kt.grad_data_fresh(fresh_k) : kt.grad_data()) : nullptr;
    T* dv = need_v ? (distinct ? vt.grad_data_fresh(fresh_v) : vt.grad_data()) : nullptr;

    // One task per (b, kv head): it alone writes that kv head's dK/dV, and it visits the query
    // heads of its group and their row tiles in a fixed order, so the result does not depend on
    // the thread count.
    const int64_t ldq = Hq * D, ldk = Hkv * D, ldv = Hkv * Dv, ldo = Hq * Dv;
    const int64_t per_head = p.per_head;
    parallel_for(p.B * Hkv, p.head_grain(2 * rep), [&](int64_t begin, int64_t end) {
      std::unique_ptr<Buffer<T>> ds_buf;  // dS in the layout of P
      if (need_ds) ds_buf = std::make_unique<Buffer<T>>(per_head, MemCat::kActivations, false);
      for (int64_t bg = begin; bg < end; ++bg) {
        const int64_t b = bg / Hkv, g = bg % Hkv;
        const T* kh = kd + b * Tk * ldk + g * D;
        const T* vh = vd + b * Tk * ldv + g * Dv;
        for (int64_t t = 0; t < Tk; ++t) {  // this task's parts of fresh gradients start at zero
          if (fresh_k) std::fill_n(dk + b * Tk * ldk + g * D + t * ldk, D, T(0));
          if (fresh_v) std::fill_n(dv + b * Tk * ldv + g * Dv + t * ldv, Dv, T(0));
        }
        if (fresh_q) {
          for (int64_t h = g * rep; h < (g + 1) * rep; ++h)
            for (int64_t t = 0; t < Tq; ++t) std::fill_n(dq + b * Tq * ldq + h * D + t * ldq, D, T(0));
        }
        for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
          const T* qh = qd + b * Tq * ldq + h * D;
          const T* doh = dout + b * Tq * ldo + h * Dv;
          const T* ph = pd + (b * Hq + h) * per_head;
          p.for_each_tile(segments, [&](int64_t i0, int64_t i1, int64_t kb, int64_t ke, int64_t at, int64_t ld) {
            const int64_t m = i1 - i0, n = ke - kb;
            if (n <= 0) return;              // nothing visible: P and every gradient term are zero
            const T* pt = ph + at;           // P tile [m, n], row stride ld
            const T* do_t = doh + i0 * ldo;  // dO tile [m, Dv]
            if (need_v) {                    // dV[kb, ke) += Pᵀ dO  [n, Dv]
              gemm_serial(true, false, n, Dv, m, T(1), pt, ld, do_t, ldo, T(1),
                          dv + b * Tk * ldv + g * Dv + kb * ldv, ldv);
            }
            if (!need_ds) return;
            T* ds = ds_buf->data() + at;
            // dP = dO V[kb, ke)ᵀ  [m, n]
            gemm_serial(false, true, m, n, Dv, T(1), do_t, ldo, vh + kb * ldv, ldv, T(0), ds, ld);
            // dS = P ⊙ (dP − rowsum(dP ⊙ P)): zero wherever P is (masked keys, empty rows)
            for (int64_t i = 0; i < m; ++i) {
              typename TensorT<T>::ConstMap pr(pt + i * ld, n);
              typename TensorT<T>::Map dr(ds + i * ld, n);
              const T dot = (dr * pr).sum();
              dr = pr * (dr - dot);
            }
            if (need_q) {  // dQ += scale · dS K[kb, ke)  [m, D]
              gemm_serial(false, false, m, D, n, sc, ds, ld, kh + kb * ldk, ldk, T(1),
                          dq + b * Tq * ldq + h * D + i0 * ldq, ldq);
            }
            if (need_k) {  // dK[kb, ke) += scale · dSᵀ Q  [n, D]
              gemm_serial(true, false, n, D, m, sc, ds, ld, qh + i0 * ldq, ldq, T(1),
                          dk + b * Tk * ldk + g * D + kb * ldk, ldk);
            }
          });
        }
      }
    });
  });
  return out;
}

template <typename T>
KvCache<T>::KvCache(int num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                    int64_t v_head_dim, int64_t initial_capacity)
    : batch_(batch),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      v_head_dim_(v_head_dim),
      capacity_(initial_capacity) {
  VLM_CHECK(num_layers >= 0 && batch > 0 && kv_heads > 0 && head_dim > 0 && v_head_dim > 0,
            "KvCache: need layers >= 0 and positive batch, kv_heads, head dims; got layers "
                << num_layers << ", batch " << batch << ", kv_heads " << kv_heads << ", head_dim "
                << head_dim << ", v_head_dim " << v_head_dim);
  VLM_CHECK(initial_capacity >= 1,
            "KvCache: initial capacity must be >= 1, got " << initial_capacity);
  MemCatScope scope(MemCat::kKvCache);
  layers_.resize(static_cast<std::size_t>(num_layers));
  for (Layer& l : layers_) {
    l.k = TensorT<T>::empty({batch_, capacity_, kv_heads_, head_dim_});
    l.v = TensorT<T>::empty({batch_, capacity_, kv_heads_, v_head_dim_});
  }
}

template <typename T>
int64_t KvCache<T>::length(int layer) const {
  VLM_CHECK(layer >= 0 && layer < static_cast<int>(layers_.size()),
            "KvCache: layer " << layer << " out of range [0, " << layers_.size() << ")");
  return layers_[static_cast<std::size_t>(layer)].len;
}

template <typename T>
void KvCache<T>::reserve(Layer& l, int64_t needed) {
  const int64_t cap = l.k.dim(1);
  if (needed <= cap) return;
  int64_t new_cap = cap;
  while (new_cap < needed) new_cap *= 2;  // doubling keeps appends amortised O(1)
  MemCatScope scope(MemCat::kKvCache);
  auto grow = [&](const TensorT<T>& old, int64_t d) {
    TensorT<T> t = TensorT<T>::empty({batch_, new_cap, kv_heads_, d});
    const int64_t row = kv_heads_ * d;
    for (int64_t b = 0; b < batch_; ++b) {
      std::memcpy(t.data() + b * new_cap * row, old.data() + b * cap * row,
                  static_cast<std::size_t>(l.len * row) * sizeof(T));
    }
    return t;
  };
  TensorT<T> nk = grow(l.k, head_dim_);
  TensorT<T> nv = grow(l.v, v_head_dim_);
  l.k = nk;
  l.v = nv;
}

template <typename T>
TensorT<T> KvCache<T>::attend(int layer, const TensorT<T>& q, const TensorT<T>& k_new,
                              const TensorT<T>& v_new, const AttnMask& mask, double scale) {
  VLM_CHECK(layer >= 0 && layer < static_cast<int>(layers_.size()),
            "KvCache::attend: layer " << layer << " out of range [0, " << layers_.size() << ")");
  VLM_CHECK(
      !(grad_enabled() && (q.requires_grad() || k_new.requires_grad() || v_new.requires_grad())),
      "KvCache::attend is inference-only (no gradient flows through the cache): run it "
      "under NoGradGuard or pass inputs that do not require grad");
  check_qkv(q, k_new, v_new, "KvCache::attend");
  VLM_CHECK(k_new.dim(0) == batch_ && k_new.dim(2) == kv_heads_ && k_new.dim(3) == head_dim_ &&
                v_new.dim(3) == v_head_dim_,
            "KvCache::attend: cache is [B=" << batch_ << ", T, Hkv=" << kv_heads_
                                            << ", D=" << head_dim_ << "|Dv=" << v_head_dim_
                                            << "], got k " << shape_str(k_new.shape()) << ", v "
                                            << shape_str(v_new.shape()));
  Layer& l = layers_[static_cast<std::size_t>(layer)];
  const int64_t tn = k_new.dim(1);
  check_mask(mask, batch_, q.dim(1), l.len + tn);  // before the append: a bad call changes nothing
  reserve(l, l.len + tn);
  const int64_t cap = l.k.dim(1);
  const int64_t krow = kv_heads_ * head_dim_, vrow = kv_heads_ * v_head_dim_;
  for (int64_t b = 0; b < batch_; ++b) {  // append: [B, Tn, Hkv, D] -> rows len..len+Tn
    std::memcpy(l.k.data() + (b * cap + l.len) * krow, k_new.data() + b * tn * krow,
                static_cast<std::size_t>(tn * krow) * sizeof(T));
    std::memcpy(l.v.data() + (b * cap + l.len) * vrow, v_new.data() + b * tn * vrow,
                static_cast<std::size_t>(tn * vrow) * sizeof(T));
  }
  l.len += tn;

  AttnProblem<T> p;
  p.B = batch_, p.Tq = q.dim(1), p.Hq = q.dim(2), p.D = head_dim_;
  p.Tk = l.len, p.Hkv = kv_heads_, p.Dv = v_head_dim_;
  p.q = q.data(), p.k = l.k.data(), p.v = l.v.data();
  p.q_bs = p.Tq * p.Hq * p.D, p.k_bs = cap * krow, p.v_bs = cap * vrow;
  p.mask = &mask;
  p.causal = mask.causal;
  p.scale = static_cast<T>(scale);
  p.per_head = AttnProblem<T>::prob_size(mask.segments, p.Tq, p.Tk);
  TensorT<T> out = TensorT<T>::empty({p.B, p.Tq, p.Hq, p.Dv});
  if (p.Tk == 0 || out.numel() == 0) {
    out.vec().setZero();
    return out;
  }
  attention_forward(p, out.data(), static_cast<T*>(nullptr));
  return out;
}

template <typename T>
void KvCache<T>::clear() {
  for (Layer& l : layers_) l.len = 0;  // buffers are kept for the next sequence
}

template TensorT<float> attention(const TensorT<float>&, const TensorT<float>&,
                                  const TensorT<float>&, const AttnMask&, double);
template TensorT<double> attention(const TensorT<double>&, const TensorT<double>&,
                                   const TensorT<double>&, const AttnMask&, double);
template class KvCache<float>;
template class KvCache<double>;

}  // namespace vlm
