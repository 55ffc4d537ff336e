// The few-row A·Bᵀ kernel (see gemm_kernel.h). Blocking: 3 rows of A by 4 rows of B, twelve 8-wide
// accumulators held in registers over the whole K loop, with 3 rows of A and 1 of B loaded: all 16
// ymm registers, and a step of 8 along K is 12 FMAs for 7 loads. The outer loop walks B's rows in
// blocks of 4 and the inner one A's rows, so a block of B (at most 16 KiB at K = 1024) comes from
// memory once, prefetched, and then from L1 for every row block of A; A (M·K floats) stays in L2.
#include "lib/ops/gemm_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace vlm::detail {

// Where the kernel beats OpenBLAS's sgemm (single-threaded, both alternating on the 2-core Zen 3
// machine, N 35 to 1024). The kernel's rate grows with K (each block's horizontal sums and loop
// exit are paid once per K/8 steps): about 75-80 GFLOP/s from K = 256, 50 at K = 64, 20 at K = 16.
// OpenBLAS's grows with M (it packs B on every call): 10 GFLOP/s at M = 2, 55 at 35, 75-80 from
// 64. The kernel is 1.3-1.5x faster at a prefill's 35 rows with K = 256 or 1024, equal from about
// M = 56 (K = 256) to 80 (K = 1024), 0.85x at M = 48 with K = 64, and slower at any M for K <= 32.
bool use_few_rows_kernel(int64_t M, int64_t K) {
  if (!kHasFewRowsKernel || M < 2 || K < 48) return false;
  return M <= (K >= 128 ? 56 : 40);
}

#if defined(__AVX2__) && defined(__FMA__)

namespace {

constexpr int kMR = 3;  // rows of A per block
constexpr int kNR = 4;  // rows of B (columns of C) per block

// The horizontal sums of four accumulators, [Σa0, Σa1, Σa2, Σa3]. Every lane sums its 8 partials in
// the same order ((p0+p1)+(p2+p3)) + ((p4+p5)+(p6+p7)) whatever its position, so an element's result
// does not depend on which column of a block it falls in.
inline __m128 sum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Keeps v in a register from here on. Without it GCC 12 folds the loads of A's rows (or, if only
// those are kept, of B's) into every FMA that uses them, 16 loads per 12 FMAs where 7 do, which
// makes the loop bound by loads instead of FMAs.
inline void in_register(__m256& v) { __asm__("" : "+x"(v)); }

// The sums of one row's NR accumulators (NR <= 4), the missing ones taken as zero.
template <int NR>
inline __m128 sum_row(const __m256 (&r)[NR]) {
  const __m256 z = _mm256_setzero_ps();
  return sum4(r[0], NR > 1 ? r[std::min(1, NR - 1)] : z, NR > 2 ? r[std::min(2, NR - 1)] : z,
              NR > 3 ? r[std::min(3, NR - 1)] : z);
}

// Lanes [0, n) set, the rest clear (n in 1..7): the mask for K's last partial step of 8.
inline __m256i tail_mask(int64_t n) {
  alignas(32) static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - n));
}

// What a block needs besides its operands, passed by reference: as float arguments alpha and beta
// would arrive in two ymm registers that the compiler then keeps through the K loop, leaving too few
// for the accumulators and A.
struct Params {
  float alpha, beta;
  const float* ahead;  // rows of B to prefetch, when the block does
};

// One MR x NR block of C (MR <= 3, NR <= 4). With Prefetch it also pulls the 4 rows of B at
// p.ahead into the cache as it goes along K (see sgemm_nt_few_rows).
template <int MR, int NR, bool Prefetch>
void block(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, const Params& p, float* C,
           int64_t ldc) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  _Pragma("GCC unroll 4") for (; k + 8 <= K; k += 8) {
    if constexpr (Prefetch)  // each line twice (every 8 floats): simpler than a loop by 16, and as fast
      for (int j = 0; j < kNR; ++j) _mm_prefetch(reinterpret_cast<const char*>(p.ahead + j * ldb + k), _MM_HINT_T0);
    __m256 a[MR];
    for (int i = 0; i < MR; ++i) {
      a[i] = _mm256_loadu_ps(A + i * lda + k);
      in_register(a[i]);
    }
    for (int j = 0; j < NR; ++j) {
      __m256 b = _mm256_loadu_ps(B + j * ldb + k);
      in_register(b);
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm256_fmadd_ps(a[i], b, acc[i][j]);
    }
  }
  if (k < K) {  // the last K % 8: masked loads read nothing past the row and give zeros
    if constexpr (Prefetch)
      for (int j = 0; j < kNR; ++j) _mm_prefetch(reinterpret_cast<const char*>(p.ahead + j * ldb + k), _MM_HINT_T0);
    const __m256i m = tail_mask(K - k);
    __m256 a[MR];
    for (int i = 0; i < MR; ++i) a[i] = _mm256_maskload_ps(A + i * lda + k, m);
    for (int j = 0; j < NR; ++j) {
      const __m256 b = _mm256_maskload_ps(B + j * ldb + k, m);
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm256_fmadd_ps(a[i], b, acc[i][j]);
    }
  }
  const float beta = p.beta;
  const __m128 va = _mm_set1_ps(p.alpha), vb = _mm_set1_ps(beta);
  for (int i = 0; i < MR; ++i) {
    const __m128 s = _mm_mul_ps(va, sum_row<NR>(acc[i]));
    float* c = C + i * ldc;
    if constexpr (NR == 4) {
      _mm_storeu_ps(c, beta == 0.0f ? s : _mm_fmadd_ps(vb, _mm_loadu_ps(c), s));
    } else {
      alignas(16) float r[4];
      _mm_store_ps(r, s);
      for (int j = 0; j < NR; ++j) c[j] = beta == 0.0f ? r[j] : std::fma(beta, c[j], r[j]);
    }
  }
}

using BlockFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, const Params&, float*, int64_t);

template <int MR>
constexpr BlockFn block_for(int64_t nr) {
  return nr == 4   ? block<MR, 4, false>
         : nr == 3 ? block<MR, 3, false>
         : nr == 2 ? block<MR, 2, false>
                   : block<MR, 1, false>;
}

BlockFn block_for(int64_t mr, int64_t nr) {
  return mr == 3 ? block_for<3>(nr) : mr == 2 ? block_for<2>(nr) : block_for<1>(nr);
}

}  // namespace

// A weight matrix comes from memory (each is read once per forward), and at K = 256 its rows are
// only 16 lines long, too short for the hardware prefetcher to get going before the kernel moves on
// to the next rows. So the first row block of A under each block of B's rows prefetches the next
// block's rows while it computes. (Measured on weights not in cache, 35 rows: 5-15% faster than no
// prefetch; prefetching two blocks ahead, into L2 only, or spread over all row blocks of A was no
// better or slower.)
void sgemm_nt_few_rows(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t j0 = 0; j0 < N; j0 += kNR) {
    const int64_t nr = std::min<int64_t>(kNR, N - j0);
    const float* b = B + j0 * ldb;
    const Params p{alpha, beta, b + kNR * ldb};
    const BlockFn full = block_for(kMR, nr);
    int64_t i0 = 0;
    if (M >= kMR) {
      const bool ahead = nr == kNR && j0 + 2 * kNR <= N;  // a full block of B's rows follows
      (ahead ? block<kMR, kNR, true> : full)(K, A, lda, b, ldb, p, C + j0, ldc);
      i0 = kMR;
    }
    for (; i0 + kMR <= M; i0 += kMR) full(K, A + i0 * lda, lda, b, ldb, p, C + i0 * ldc + j0, ldc);
    if (i0 < M) block_for(M - i0, nr)(K, A + i0 * lda, lda, b, ldb, p, C + i0 * ldc + j0, ldc);
  }
}

#else

void sgemm_nt_few_rows(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
                       int64_t) {
  std::abort();  // not built: use_few_rows_kernel() is false
}

#endif

}  // namespace vlm::detail
