// A register-blocked single-precision kernel for C = alpha·A·Bᵀ + beta·C with few rows in A, and B
// stored [N, K] row-major (a linear layer's weight). OpenBLAS packs B anew on every call, which on
// a prefill's 25-40 rows costs about a third of the product; this kernel reads B in place instead,
// each element of C a dot product of a row of A and a row of B with 8-wide FMA accumulators.
// Internal to lib/ops: gemm_serial (matmul.cpp) decides when to use it (in inference only, with grad off).
#pragma once

#include <cstdint>

namespace vlm::detail {

// Whether this build has the kernel (AVX2 and FMA at compile time, e.g. with -march=native).
constexpr bool kHasFewRowsKernel =
#if defined(__AVX2__) && defined(__FMA__)
    true;
#else
    false;
#endif

// Whether gemm_serial sends an M x N x K product with trans_b (and not trans_a) to the kernel. It
// depends on M and K only, so that splitting the columns of C over threads never changes which path
// computes an element.
bool use_few_rows_kernel(int64_t M, int64_t K);

// Row-major C[M, N] = alpha · A[M, K] · B[N, K]ᵀ + beta · C, as sgemm(NoTrans, Trans) does: beta 0
// writes C without reading it. Each element's sum runs over K in the same order whatever M, N and
// the element's position, so splitting C's columns leaves the results bit-identical. Only when
// kHasFewRowsKernel (otherwise it aborts).
void sgemm_nt_few_rows(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace vlm::detail
