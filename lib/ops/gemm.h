// The one GEMM entry point of the core: row-major C = alpha·op(A)·op(B) + beta·C, in float through
// the core's packed kernels at the CPU's width (gemm_kernels.h; or, in inference, for a few rows of A
// times a transposed B, the register-blocked kernel of gemm_kernel.h; one-row products through
// cblas_sgemv), in double through cblas_dgemm, split over the core's threads (OpenBLAS itself runs
// single-threaded, see parallel.h) and counted in the FLOP counter. Every matrix product in lib/
// goes through here.
#pragma once

#include <cstdint>
#include <vector>

namespace vlm {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The same, on the calling thread only (for callers that already parallelise, e.g. over heads).
template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// One call of gemm() as a GemmRecorder saw it: the operation, not the operands.
struct GemmCall {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  bool accumulate = false;  // beta != 0: C is read and added to
  bool grad = true;         // the grad mode it ran in (inference may take the few-row kernel)
  bool operator==(const GemmCall&) const = default;
};

// While alive, records every gemm() called on the thread that made it, in call order (not
// gemm_serial: the products callers already spread over threads themselves, such as attention's per
// head). A measurement aid: `vlmlab bench-model --time train_gemms` replays a training step's
// products alone. One recorder per thread at a time.
class GemmRecorder {
 public:
  GemmRecorder();
  ~GemmRecorder();
  GemmRecorder(const GemmRecorder&) = delete;
  GemmRecorder& operator=(const GemmRecorder&) = delete;
  const std::vector<GemmCall>& calls() const { return calls_; }

 private:
  std::vector<GemmCall> calls_;  // gemm() appends through a thread-local pointer to it
};

// The precision of float products. kBf16: bf16 inputs, fp32 accumulation (gemm_kernels.h,
// sgemm_bf16; AVX512_BF16 where the CPU has it), as mixed-precision training runs its products;
// everything else (weights, gradients' sums across products, optimizer, loss) stays fp32. One setting
// for the process, seen by every thread of gemm()'s split; fp32 unless a GemmPrecisionScope says
// otherwise. One-row products (gemv) and the few-row inference kernel stay fp32.
enum class GemmPrecision { kFp32, kBf16 };
GemmPrecision gemm_precision();
const char* gemm_precision_name(GemmPrecision p);  // "fp32", "bf16"

// Sets the precision while alive, then restores the one before.
class GemmPrecisionScope {
 public:
  explicit GemmPrecisionScope(GemmPrecision p);
  ~GemmPrecisionScope();
  GemmPrecisionScope(const GemmPrecisionScope&) = delete;
  GemmPrecisionScope& operator=(const GemmPrecisionScope&) = delete;

 private:
  GemmPrecision before_;
};

namespace detail {
// Whether gemm() splits an M x N x K product over the threads (when there is more than one).
bool gemm_splits(int64_t M, int64_t N, int64_t K);
}  // namespace detail

}  // namespace vlm
