// Matrix products: gemm (the BLAS entry point), batched matmul and linear, forward and backward.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "lib/core/parallel.h"
#include "lib/measure/flops.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernel.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/ops/op_util.h"
#include "lib/ops/ops.h"

namespace vlm {
namespace {

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
               int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

// Matrix-vector products (M == 1: decoding one token; N == 1) go to gemv: sgemm would pack the whole
// matrix first, which costs as much as the product itself when one side is a vector.
void blas_gemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* A, int64_t lda, const float* x,
               int64_t incx, float beta, float* y, int64_t incy) {
  cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, static_cast<blasint>(rows),
              static_cast<blasint>(cols), alpha, A, static_cast<blasint>(lda), x, static_cast<blasint>(incx), beta, y,
              static_cast<blasint>(incy));
}

void blas_gemv(bool trans, int64_t rows, int64_t cols, double alpha, const double* A, int64_t lda, const double* x,
               int64_t incx, double beta, double* y, int64_t incy) {
  cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, static_cast<blasint>(rows),
              static_cast<blasint>(cols), alpha, A, static_cast<blasint>(lda), x, static_cast<blasint>(incx), beta, y,
              static_cast<blasint>(incy));
}

// Below this much work a split costs more than it gains. With the core's worker spinning between
// regions a split pays from about 1 MFLOP: a prefill's 25x256x256 projection takes 36 us split,
// 68 us not (2 threads, best of 200); 64³ (0.5 MFLOP) gains little.
constexpr int64_t kSplitFlops = int64_t{1} << 20;
// A one-row product (decoding a token) streams its whole weight for 2 FLOPs per element, so each
// thread's half of the weight is what the split saves, and it pays from much less work: split from
// a 64K-element weight (256 KiB in float). Large-size decode per token with 2 threads: 0.160-0.177
// -> 0.106-0.132 ms (llava, qwen2vl; interleaved, medians of 40); from 32K elements up it is the same,
// from 128K 5-10% slower.
constexpr int64_t kSplitFlopsOneRow = int64_t{1} << 17;
constexpr int64_t kMinRowsPerThread = 32;

thread_local std::vector<GemmCall>* t_gemm_calls = nullptr;  // the calling thread's recorder's, if any

std::atomic<GemmPrecision> g_precision{GemmPrecision::kFp32};

}  // namespace

GemmPrecision gemm_precision() { return g_precision.load(std::memory_order_relaxed); }

const char* gemm_precision_name(GemmPrecision p) { return p == GemmPrecision::kBf16 ? "bf16" : "fp32"; }

GemmPrecisionScope::GemmPrecisionScope(GemmPrecision p) : before_(g_precision.exchange(p)) {}

GemmPrecisionScope::~GemmPrecisionScope() { g_precision.store(before_); }

GemmRecorder::GemmRecorder() {
  VLM_CHECK(t_gemm_calls == nullptr, "GemmRecorder: this thread already has one");
  t_gemm_calls = &calls_;
}

GemmRecorder::~GemmRecorder() { t_gemm_calls = nullptr; }

namespace detail {
bool gemm_splits(int64_t M, int64_t N, int64_t K) {
  return K > 0 && 2 * M * N * K >= (M == 1 ? kSplitFlopsOneRow : kSplitFlops);
}
}  // namespace detail

template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  add_flops(2 * M * N * K);
  if (K == 0) {  // BLAS would only scale C by beta
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  if (M == 1) {  // c[N] = op(B)ᵀ a: B is [N, K] (trans_b) or [K, N]; a's elements are lda apart when trans_a
    if (trans_b) blas_gemv(false, N, K, alpha, B, ldb, A, trans_a ? lda : 1, beta, C, 1);
    else blas_gemv(true, K, N, alpha, B, ldb, A, trans_a ? lda : 1, beta, C, 1);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    // Few rows times a weight stored [N, K] in inference (prefill, evaluation): a kernel that reads B
    // in place instead of packing it. The choice depends on M and K only, so it is the same for every
    // column block gemm() splits off. Training (grad on) stays on OpenBLAS at every M: a data-parallel
    // rank's half batch would otherwise take the kernel where the whole batch does not, and the two
    // would sum in different orders (tests/experiments/test_mpi.py compares them within 1e-5).
    if (!trans_a && trans_b && !grad_enabled() && detail::use_few_rows_kernel(M, K)) {
      detail::sgemm_nt_few_rows(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    // Everything else in float: the core's packed kernels at the CPU's own width (gemm_kernels.h),
    // unless VLMLAB_GEMM=openblas. Each element's sum is one FMA chain over k in order, so any split
    // of C over threads or data-parallel ranks gives the same bits. (One column, N == 1, too: gemv
    // would sum in its own order, and a column's chain must not depend on N.)
    if (gemm_precision() == GemmPrecision::kBf16) {
      detail::sgemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    const detail::GemmKernel kernel = detail::gemm_kernel();
    if (kernel != detail::GemmKernel::kOpenBlas) {
      detail::sgemm_packed(kernel, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
  }
  if (N == 1) {  // c[M] (stride ldc) = op(A) b: A is [M, K] or [K, M] (trans_a); b's elements are ldb apart unless trans_b
    if (trans_a) blas_gemv(true, K, M, alpha, A, lda, B, trans_b ? 1 : ldb, beta, C, ldc);
    else blas_gemv(false, M, K, alpha, A, lda, B, trans_b ? 1 : ldb, beta, C, ldc);
    return;
  }
  blas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (t_gemm_calls != nullptr) t_gemm_calls->push_back({trans_a, trans_b, M, N, K, beta != T(0), grad_enabled()});
  const int64_t nt = num_threads();
  if (nt <= 1 || !detail::gemm_splits(M, N, K)) {
    gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the rows of C when there are enough of them, else its columns. Each element's K-sum is
  // computed the same way in either case, and the partition depends only on (M, N, threads).
  if (M >= kMinRowsPerThread * nt) {
    parallel_for(M, kMinRowsPerThread, [&](int64_t m0, int64_t m1) {
      const T* a = trans_a ? A + m0 : A + m0 * lda;
      gemm_serial(trans_a, trans_b, m1 - m0, N, K, alpha, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
    });
  } else {
    // Columns in blocks of 64: BLAS kernels treat a column by its place in their unroll blocks (a
    // one-row product's gemv gives other bits to the columns next to an unaligned cut), so block
    // boundaries keep every column's arithmetic what it is unsplit, the same with 1 and 2 threads.
    constexpr int64_t kCols = 64;
    parallel_for((N + kCols - 1) / kCols, 1, [&](int64_t c0, int64_t c1) {
      const int64_t n0 = c0 * kCols, n1 = std::min(N, c1 * kCols);
      const T* b = trans_b ? B + n0 * ldb : B + n0;
      gemm_serial(trans_a, trans_b, M, n1 - n0, K, alpha, A, lda, b, ldb, beta, C + n0, ldc);
    });
  }
}

template <typename T>
TensorT<T> matmul(const TensorT<T>& a, const TensorT<T>& b, bool trans_a, bool trans_b) {
  VLM_CHECK(a.ndim() >= 2 && b.ndim() >= 2, "matmul needs 2-D or more, got " << shape_str(a.shape())
                                                                              << " and " << shape_str(b.shape()));
  const int64_t M = trans_a ? a.dim(-1) : a.dim(-2);
  const int64_t K = trans_a ? a.dim(-2) : a.dim(-1);
  const int64_t Kb = trans_b ? b.dim(-1) : b.dim(-2);
  const int64_t N = trans_b ? b.dim(-2) : b.dim(-1);
  VLM_CHECK(K == Kb, "matmul: inner dimensions differ: " << shape_str(a.shape()) << (trans_a ? "ᵀ" : "")
                                                         << " x " << shape_str(b.shape()) << (trans_b ? "ᵀ" : ""));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2);
  const Shape b_batch(b.shape().begin(), b.shape().end() - 2);
  Shape batch = detail::broadcast_shape(a_batch, b_batch);
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  TensorT<T> out = TensorT<T>::empty(out_shape);
  const int64_t nb = numel_of(batch);
  const int64_t lda = a.dim(-1), ldb = b.dim(-1);
  const int64_t a_mat = a.dim(-1) * a.dim(-2), b_mat = b.dim(-1) * b.dim(-2);

  // A shared 2-D right operand with an untransposed left one: one GEMM over all batch rows.
  const bool fold = b.ndim() == 2 && !trans_a;
  const std::vector<int64_t> a_off = fold ? std::vector<int64_t>{} : detail::broadcast_offsets(batch, a_batch);
  const std::vector<int64_t> b_off = fold ? std::vector<int64_t>{} : detail::broadcast_offsets(batch, b_batch);
  if (fold) {
    gemm(false, trans_b, nb * M, N, K, T(1), a.data(), lda, b.data(), ldb, T(0), out.data(), N);
  } else {
    for (int64_t i = 0; i < nb; ++i) {
      gemm(trans_a, trans_b, M, N, K, T(1), a.data() + a_off[i] * a_mat, lda, b.data() + b_off[i] * b_mat,
           ldb, T(0), out.data() + i * M * N, N);
    }
  }
  out.set_backward({a, b}, [=](const TensorT<T>& o) {
    TensorT<T> ga = o.input(0), gb = o.input(1);
    const T* g = o.grad().data();
    if (fold) {
      // C = A·op(B): dA = dC·op(B)ᵀ; dB (or dBᵀ) = Aᵀ·dC. A gradient allocated just now is written
      // (beta 0), not zeroed and added to; ga before gb, in case they are one tensor.
      bool fresh = false;
      if (ga.requires_grad()) {
        T* da = ga.grad_data_fresh(fresh);
        gemm(false, !trans_b, nb * M, K, N, T(1), g, N, gb.data(), ldb, fresh ? T(0) : T(1), da, lda);
      }
      if (gb.requires_grad()) {
        T* db = gb.grad_data_fresh(fresh);
        const T beta = fresh ? T(0) : T(1);
        if (trans_b)
          gemm(true, false, N, K, nb * M, T(1), g, N, ga.data(), lda, beta, db, ldb);
        else
          gemm(true, false, K, N, nb * M, T(1), ga.data(), lda, g, N, beta, db, ldb);
      }
      return;
    }
    for (int64_t i = 0; i < nb; ++i) {  // in batch order: accumulation into shared operands is deterministic
      const T* gi = g + i * M * N;
      const T* ai = ga.data() + a_off[i] * a_mat;
      const T* bi = gb.data() + b_off[i] * b_mat;
      if (ga.requires_grad()) {
        T* dai = ga.grad_data() + a_off[i] * a_mat;
        if (trans_a)  // A stored [K, M]: dA = op(B)·dCᵀ
          gemm(trans_b, true, K, M, N, T(1), bi, ldb, gi, N, T(1), dai, lda);
        else
          gemm(false, !trans_b, M, K, N, T(1), gi, N, bi, ldb, T(1), dai, lda);
      }
      if (gb.requires_grad()) {
        T* dbi = gb.grad_data() + b_off[i] * b_mat;
        if (trans_b)  // B stored [N, K]: dB = dCᵀ·op(A)
          gemm(true, trans_a, N, K, M, T(1), gi, N, ai, lda, T(1), dbi, ldb);
        else
          gemm(!trans_a, false, K, N, M, T(1), ai, lda, gi, N, T(1), dbi, ldb);
      }
    }
  });
  return out;
}

template <typename T>
TensorT<T> linear(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias) {
  VLM_CHECK(weight.ndim() == 2, "linear: weight must be [out, in], got " << shape_str(weight.shape()));
  const int64_t in = weight.dim(1), outf = weight.dim(0);
  VLM_CHECK(x.ndim() >= 1 && x.dim(-1) == in, "linear: input " << shape_str(x.shape()) << " does not end in "
                                                               << in << " (weight " << shape_str(weight.shape())
                                                               << ")");
  VLM_CHECK(!bias.defined() || (bias.ndim() == 1 && bias.dim(0) == outf),
            "linear: bias must be [" << outf << "], got " << shape_str(bias.shape()));
  const int64_t M = x.numel() / std::max<int64_t>(in, 1);
  Shape out_shape = x.shape();
  out_shape.back() = outf;
  TensorT<T> out = TensorT<T>::empty(out_shape);
  T* y = out.data();
  if (bias.defined()) {  // rows split as the GEMM's rows will be: each thread's rows stay in its cache
    const T* bp = bias.data();
    parallel_for(M, std::max<int64_t>(kMinRowsPerThread, detail::kElementwiseGrain / std::max<int64_t>(outf, 1)),
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t i = r0; i < r1; ++i) std::copy(bp, bp + outf, y + i * outf);
                 });
  }
  gemm(false, true, M, outf, in, T(1), x.data(), in, weight.data(), in, bias.defined() ? T(1) : T(0), y, outf);
  std::vector<TensorT<T>> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  out.set_backward(std::move(inputs), [M, in, outf](const TensorT<T>& o) {
    TensorT<T> xi = o.input(0), w = o.input(1);
    const T* g = o.grad().data();
    // A gradient allocated just now is written (beta 0), not zeroed first and added to.
    bool fresh = false;
    if (xi.requires_grad()) {
      T* dx = xi.grad_data_fresh(fresh);
      gemm(false, false, M, in, outf, T(1), g, outf, w.data(), in, fresh ? T(0) : T(1), dx, in);
    }
    if (w.requires_grad()) {
      T* dw = w.grad_data_fresh(fresh);
      gemm(true, false, outf, in, M, T(1), g, outf, xi.data(), in, fresh ? T(0) : T(1), dw, in);
    }
    if (o.num_inputs() == 3 && o.input(2).requires_grad()) {
      TensorT<T> b = o.input(2);
      T* db = b.grad_data_fresh(fresh);
      detail::sum_rows_into(g, M, outf, db, fresh);
    }
  });
  return out;
}

#define VLM_INSTANTIATE(T)                                                                              \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, T*, \
                        int64_t);                                                                       \
  template void gemm_serial<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, \
                               T, T*, int64_t);                                                         \
  template TensorT<T> matmul(const TensorT<T>&, const TensorT<T>&, bool, bool);                         \
  template TensorT<T> linear(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
