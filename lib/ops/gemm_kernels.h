// The core's own packed single-precision GEMM, at the width of the CPU it runs on: register-blocked
// microkernels for AVX-512 (12 x 32), AVX2 + FMA (6 x 16) and a portable one (4 x 16, std::fma),
// chosen at run time from CPUID (lib/core/cpu.h), each compiled for its instruction set with a
// per-function target attribute, so one x86-64 binary needs none of them to start.
//
// Every element of C is one sequential chain of fused multiply-adds over k = 0, 1, ..., K-1,
// starting from beta·C (or from 0 when beta is 0, C then not read), with alpha folded into A's
// elements as they are packed (alpha·a, rounded, times b). Blocking along K only stores the chain's
// running value in C and reloads it, which is exact. So the bits of an element depend on neither M,
// N, the element's position, the tile sizes, the thread split (matmul.cpp) nor the kernel: AVX-512,
// AVX2 and the portable kernel give the same results, bit for bit (tests/ops/test_gemm.cpp).
// Internal to lib/ops: gemm_serial (matmul.cpp) sends float products here.
#pragma once

#include <cstdint>

namespace vlm::detail {

enum class GemmKernel {
  kOpenBlas,  // cblas_sgemm, as before this file: whatever OpenBLAS's table and OPENBLAS_CORETYPE pick
  kPortable,  // 4 x 16 tiles of std::fma: any CPU
  kAvx2,      // 6 x 16 tiles of 256-bit FMAs (Haswell, Zen 1-3 and later)
  kAvx512,    // 12 x 32 tiles of 512-bit FMAs (Skylake-X and later, Zen 4, Zen 5)
};

const char* gemm_kernel_name(GemmKernel k);  // "openblas", "portable", "avx2", "avx512"

// Whether this CPU (and OS) can run the kernel.
bool gemm_kernel_available(GemmKernel k);

// The widest kernel the CPU has.
GemmKernel best_gemm_kernel();

// The kernel gemm() uses for float products: best_gemm_kernel(), unless the environment variable
// VLMLAB_GEMM names another (openblas, portable, avx2, avx512; for measurements: one binary compares
// them side by side), or set_gemm_kernel() chose one. An unknown or unavailable name aborts at first
// use, naming what this CPU has.
GemmKernel gemm_kernel();
void set_gemm_kernel(GemmKernel k);  // k must be available

// Row-major C[M, N] = alpha · op(A) · op(B) + beta · C as sgemm defines it (op(A) is A[M, K], or A
// stored [K, M] when trans_a; op(B) is B[K, N], or B stored [N, K] when trans_b), with the summation
// order described above; beta 0 writes C without reading it. On the calling thread. k is not kOpenBlas.
void sgemm_packed(GemmKernel k, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// bf16 products with fp32 accumulation, as mixed-precision training on accelerators runs them: the
// same C = alpha·op(A)·op(B) + beta·C, with alpha·op(A) and op(B) rounded to bfloat16 (round to
// nearest even) as they are packed and the products summed in fp32, two k at a time: per pair
// (k, k+1), c += a[k+1]·b[k+1], then c += a[k]·b[k] (each product exact in fp32), as AVX512_BF16's
// VDPBF16PS does it. Where the CPU has AVX512_BF16 that instruction runs it (12 x 32 tiles); elsewhere
// the same order in std::fma, which differs from it only where VDPBF16PS flushes subnormals to zero.
// Half the bytes of A and B to move and, with VDPBF16PS, two products per lane per instruction.
bool bf16_hardware();  // whether the CPU has AVX512_BF16 (and the OS saves zmm state)
void sgemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The same on a chosen path: hardware (AVX-512 packing and VDPBF16PS; bf16_hardware() must hold) or
// not (scalar packing and std::fma). sgemm_bf16 takes the hardware path wherever the CPU has it; the
// two give the same bits where no subnormal is rounded, multiplied or summed (tests compare them).
void sgemm_bf16_on(bool hardware, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// float -> bfloat16 bits, rounded to nearest even (NaN stays NaN).
uint16_t to_bf16(float x);

}  // namespace vlm::detail
