// The packed GEMM (see gemm_kernels.h). Goto's loop nest: for a block of NC columns of op(B) and KC
// of K, op(B)'s block is packed into panels of NR columns (k-major, NR floats per k); for a block of
// MC rows, op(A)'s block into panels of MR rows (MR floats per k, alpha applied). The microkernel
// then runs one MR x NR tile of C over the KC steps with the tile in registers: per k it loads NR
// floats of B (one or two vectors), broadcasts MR floats of A and does MR x NR/width FMAs. The B
// panel under the inner loop (KC x NR floats: 32 KiB for AVX-512, 16 KiB for AVX2) stays in L1 while
// every A panel of the block (MC x KC floats, in L2) passes under it. Tiles at C's edges run on a
// copy in a local tile (the panels are zero-padded), so only valid elements are read or written.
#include "lib/ops/gemm_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <bit>
#include <new>
#include <string>

#include "lib/core/cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VLM_X86 1
#else
#define VLM_X86 0
#endif

namespace vlm::detail {
namespace {

// One tile: c[i * ldc + j] for i < MR, j < NR, continued (load) or started from 0 (not load) by the
// kc steps of a (kc x MR, k-major) times b (kc x NR, k-major).
// next: the tile the caller runs after this one (prefetched into L1 meanwhile: C is read or written
// once per KC steps and usually comes from L3 or memory).
using TileFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load,
                        const float* next);

constexpr int kMaxTile = 12 * 32;  // floats in the largest tile (AVX-512's)

struct Geometry {
  int mr, nr;
  int64_t kc, mc, nc;  // block sizes along K, M and N (mc a multiple of mr, nc of nr)
  TileFn tile;
};

// ---- portable: 4 x 16, std::fma (a hardware FMA where the compiler targets one, else libm's) ----
constexpr int kPortMR = 4, kPortNR = 16;
static_assert(kPortMR * kPortNR <= kMaxTile);
void tile_portable(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load, const float*) {
  float acc[kPortMR][kPortNR];
  for (int i = 0; i < kPortMR; ++i)
    for (int j = 0; j < kPortNR; ++j) acc[i][j] = load ? c[i * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kc; ++k, a += kPortMR, b += kPortNR)
    for (int i = 0; i < kPortMR; ++i)
      for (int j = 0; j < kPortNR; ++j) acc[i][j] = std::fma(a[i], b[j], acc[i][j]);
  for (int i = 0; i < kPortMR; ++i)
    for (int j = 0; j < kPortNR; ++j) c[i * ldc + j] = acc[i][j];
}

#if VLM_X86
// ---- AVX2 + FMA: 6 x 16, twelve ymm accumulators, two B vectors, one broadcast ----
constexpr int kAvx2MR = 6, kAvx2NR = 16;
static_assert(kAvx2MR * kAvx2NR <= kMaxTile);
__attribute__((target("avx2,fma"))) void tile_avx2(int64_t kc, const float* a, const float* b, float* c,
                                                   int64_t ldc, bool load, const float* next) {
  for (int i = 0; i < kAvx2MR; ++i) _mm_prefetch(reinterpret_cast<const char*>(next + i * ldc), _MM_HINT_T0);
  __m256 c0[kAvx2MR], c1[kAvx2MR];
#pragma GCC unroll 6
  for (int i = 0; i < kAvx2MR; ++i) {
    c0[i] = load ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
    c1[i] = load ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kAvx2MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
    a += kAvx2MR;
    b += kAvx2NR;
  }
#pragma GCC unroll 6
  for (int i = 0; i < kAvx2MR; ++i) {
    _mm256_storeu_ps(c + i * ldc, c0[i]);
    _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
  }
}

// ---- AVX-512: 12 x 32, twenty-four zmm accumulators, two B vectors, one broadcast ----
constexpr int kAvx512MR = 12, kAvx512NR = 32;
static_assert(kAvx512MR * kAvx512NR <= kMaxTile);
__attribute__((target("avx512f"))) void tile_avx512(int64_t kc, const float* a, const float* b, float* c,
                                                    int64_t ldc, bool load, const float* next) {
  for (int i = 0; i < kAvx512MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(next + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(next + i * ldc + 16), _MM_HINT_T0);
  }
  __m512 c0[kAvx512MR], c1[kAvx512MR];
#pragma GCC unroll 12
  for (int i = 0; i < kAvx512MR; ++i) {
    c0[i] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    c1[i] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kAvx512MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
    a += kAvx512MR;
    b += kAvx512NR;
  }
#pragma GCC unroll 12
  for (int i = 0; i < kAvx512MR; ++i) {
    _mm512_storeu_ps(c + i * ldc, c0[i]);
    _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
  }
}
#endif

// Block sizes. K is blocked at 1024: every K block after the first reloads and restores all of C,
// which at 256 cost a third of the rate wherever K > 256 (C, often megabytes, comes back from L3),
// while a B panel of 1024 x NR (128 KiB for AVX-512) streamed from L2 costs little. Rows in blocks
// of 48 (A's block, 48 x 1024 floats = 192 KiB, stays in L2 beside the B panel), columns in blocks of
// 1024 (B's block: 4 MiB). Measured on the Zen 5 kind, 1 thread, CPU time, at the large training
// step's shapes: AVX-512 157-196 GFLOP/s (74-92% of the 213 peak) against 104-183 with K blocks of
// 256; AVX2 88-101 (83-95% of 106).
const Geometry kPortable{kPortMR, kPortNR, 1024, 48, 1024, tile_portable};
#if VLM_X86
const Geometry kAvx2Geo{kAvx2MR, kAvx2NR, 1024, 48, 1024, tile_avx2};
const Geometry kAvx512Geo{kAvx512MR, kAvx512NR, 1024, 48, 1024, tile_avx512};
#endif

const Geometry& geometry(GemmKernel k) {
#if VLM_X86
  if (k == GemmKernel::kAvx512) return kAvx512Geo;
  if (k == GemmKernel::kAvx2) return kAvx2Geo;
#endif
  return kPortable;
}

// Packing buffers, one pair per thread (gemm() runs gemm_serial on each thread), 64-byte aligned,
// grown on demand and kept.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  T* get(std::size_t n) {
    if (n > size_) {
      release();
      p_ = static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{64}));
      size_ = n;
    }
    return p_;
  }

 private:
  void release() {
    if (p_ != nullptr) ::operator delete[](p_, std::align_val_t{64});
    p_ = nullptr;
    size_ = 0;
  }
  T* p_ = nullptr;
  std::size_t size_ = 0;
};
thread_local Buffer<float> t_apack, t_bpack;
thread_local Buffer<uint32_t> t_apack16, t_bpack16;  // bf16 pairs

// op(A)[i0 .. i0+mc, p0 .. p0+kc] into panels of mr rows: panel r holds, for each k, the mr values
// alpha·op(A)[i0 + r·mr + i, p0 + k] (zero past row M).
void pack_a(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr,
            float alpha, float* out) {
  for (int64_t r = 0; r < mc; r += mr, out += kc * mr) {
    const int64_t rows = std::min<int64_t>(mr, mc - r);
    if (trans_a) {  // A stored [K, M]: a panel's values for one k are contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + (p0 + k) * lda + i0 + r;
        float* dst = out + k * mr;
        int64_t i = 0;
        if (alpha == 1.0f)
          for (; i < rows; ++i) dst[i] = src[i];
        else
          for (; i < rows; ++i) dst[i] = alpha * src[i];
        for (; i < mr; ++i) dst[i] = 0.0f;
      }
    } else {
      for (int64_t i = 0; i < mr; ++i) {
        float* dst = out + i;
        if (i >= rows) {
          for (int64_t k = 0; k < kc; ++k) dst[k * mr] = 0.0f;
          continue;
        }
        const float* src = A + (i0 + r + i) * lda + p0;
        if (alpha == 1.0f)
          for (int64_t k = 0; k < kc; ++k) dst[k * mr] = src[k];
        else
          for (int64_t k = 0; k < kc; ++k) dst[k * mr] = alpha * src[k];
      }
    }
  }
}

// op(B)[p0 .. p0+kc, j0 .. j0+nc] into panels of nr columns: panel s holds, for each k, the nr
// values op(B)[p0 + k, j0 + s·nr + j] (zero past column N).
void pack_b(bool trans_b, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr,
            float* out) {
  for (int64_t s = 0; s < nc; s += nr, out += kc * nr) {
    const int64_t cols = std::min<int64_t>(nr, nc - s);
    if (!trans_b) {  // B stored [K, N]: a panel's values for one k are contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + (p0 + k) * ldb + j0 + s;
        float* dst = out + k * nr;
        std::memcpy(dst, src, static_cast<std::size_t>(cols) * sizeof(float));
        for (int64_t j = cols; j < nr; ++j) dst[j] = 0.0f;
      }
    } else {  // B stored [N, K]: column j of op(B) is row j of B
      for (int64_t j = 0; j < nr; ++j) {
        float* dst = out + j;
        if (j >= cols) {
          for (int64_t k = 0; k < kc; ++k) dst[k * nr] = 0.0f;
          continue;
        }
        const float* src = B + (j0 + s + j) * ldb + p0;
        for (int64_t k = 0; k < kc; ++k) dst[k * nr] = src[k];
      }
    }
  }
}


// ---- bf16 pairs (sgemm_bf16) ----
// A panel: for each pair of k, mr words (bf16 of k+1 in the high half, of k in the low half); B panel
// likewise with nr words per pair. An odd K's last pair has a zero high half.
uint32_t bf16_pair(float lo, float hi) { return uint32_t{to_bf16(hi)} << 16 | to_bf16(lo); }

constexpr int kBfMR = 12, kBfNR = 32;
using TileBf16Fn = void (*)(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, bool load);

float bf16_value(uint32_t half) { return std::bit_cast<float>(half << 16); }

void tile_bf16_portable(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, bool load) {
  for (int i = 0; i < kBfMR; ++i)
    for (int j = 0; j < kBfNR; ++j) {
      float acc = load ? c[i * ldc + j] : 0.0f;
      for (int64_t p = 0; p < kp; ++p) {
        const uint32_t x = a[p * kBfMR + i], y = b[p * kBfNR + j];
        acc = std::fma(bf16_value(x >> 16), bf16_value(y >> 16), acc);
        acc = std::fma(bf16_value(x & 0xffff), bf16_value(y & 0xffff), acc);
      }
      c[i * ldc + j] = acc;
    }
}

#if VLM_X86
__attribute__((target("avx512f,avx512bf16"))) void tile_bf16_avx512(int64_t kp, const uint32_t* a, const uint32_t* b,
                                                                   float* c, int64_t ldc, bool load) {
  __m512 c0[kBfMR], c1[kBfMR];
#pragma GCC unroll 12
  for (int i = 0; i < kBfMR; ++i) {
    c0[i] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    c1[i] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = __builtin_bit_cast(__m512bh, _mm512_load_si512(b));
    const __m512bh b1 = __builtin_bit_cast(__m512bh, _mm512_load_si512(b + 16));
#pragma GCC unroll 12
    for (int i = 0; i < kBfMR; ++i) {
      const __m512bh ai = __builtin_bit_cast(__m512bh, _mm512_set1_epi32(static_cast<int>(a[i])));
      c0[i] = _mm512_dpbf16_ps(c0[i], ai, b0);
      c1[i] = _mm512_dpbf16_ps(c1[i], ai, b1);
    }
    a += kBfMR;
    b += kBfNR;
  }
#pragma GCC unroll 12
  for (int i = 0; i < kBfMR; ++i) {
    _mm512_storeu_ps(c + i * ldc, c0[i]);
    _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
  }
}
#endif

// op(A)[i0 .., p0 .. p0+kc] (alpha applied) into panels of kBfMR rows of pairs. Full panels and
// whole pairs take the plain loops; rows past M and an odd K's last k come in as zeros.
void pack_a_bf16(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                 float alpha, uint32_t* out) {
  const int64_t kp = (kc + 1) / 2, full = kc / 2;
  for (int64_t r = 0; r < mc; r += kBfMR, out += kp * kBfMR) {
    const int64_t rows = std::min<int64_t>(kBfMR, mc - r);
    if (trans_a) {  // A stored [K, M]: rows k and k+1 of A hold a pair's values for every i
      for (int64_t p = 0; p < kp; ++p) {
        const float* lo = A + (p0 + 2 * p) * lda + i0 + r;
        const float* hi = 2 * p + 1 < kc ? lo + lda : nullptr;
        uint32_t* dst = out + p * kBfMR;
        for (int64_t i = 0; i < rows; ++i)
          dst[i] = bf16_pair(alpha * lo[i], hi != nullptr ? alpha * hi[i] : 0.0f);
        for (int64_t i = rows; i < kBfMR; ++i) dst[i] = 0;
      }
    } else {
      for (int64_t i = 0; i < kBfMR; ++i) {
        uint32_t* dst = out + i;
        if (i >= rows) {
          for (int64_t p = 0; p < kp; ++p) dst[p * kBfMR] = 0;
          continue;
        }
        const float* src = A + (i0 + r + i) * lda + p0;
        for (int64_t p = 0; p < full; ++p) dst[p * kBfMR] = bf16_pair(alpha * src[2 * p], alpha * src[2 * p + 1]);
        if (kp > full) dst[full * kBfMR] = bf16_pair(alpha * src[2 * full], 0.0f);
      }
    }
  }
}

void pack_b_bf16(bool trans_b, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                 uint32_t* out) {
  const int64_t kp = (kc + 1) / 2, full = kc / 2;
  for (int64_t s = 0; s < nc; s += kBfNR, out += kp * kBfNR) {
    const int64_t cols = std::min<int64_t>(kBfNR, nc - s);
    if (!trans_b) {  // B stored [K, N]: rows k and k+1 of B hold a pair's values for every column
      for (int64_t p = 0; p < kp; ++p) {
        const float* lo = B + (p0 + 2 * p) * ldb + j0 + s;
        uint32_t* dst = out + p * kBfNR;
        if (2 * p + 1 < kc)
          for (int64_t j = 0; j < cols; ++j) dst[j] = bf16_pair(lo[j], lo[j + ldb]);
        else
          for (int64_t j = 0; j < cols; ++j) dst[j] = bf16_pair(lo[j], 0.0f);
        for (int64_t j = cols; j < kBfNR; ++j) dst[j] = 0;
      }
    } else {  // B stored [N, K]: column j of op(B) is row j of B
      for (int64_t j = 0; j < kBfNR; ++j) {
        uint32_t* dst = out + j;
        if (j >= cols) {
          for (int64_t p = 0; p < kp; ++p) dst[p * kBfNR] = 0;
          continue;
        }
        const float* src = B + (j0 + s + j) * ldb + p0;
        for (int64_t p = 0; p < full; ++p) dst[p * kBfNR] = bf16_pair(src[2 * p], src[2 * p + 1]);
        if (kp > full) dst[full * kBfNR] = bf16_pair(src[2 * full], 0.0f);
      }
    }
  }
}

#if VLM_X86
// The same packing with AVX-512F (where VDPBF16PS runs, AVX-512F is there): 16 floats rounded at
// once, bit for bit as to_bf16 (nearest even on the bits, NaN kept quiet; no flush of subnormals),
// so the panels hold exactly what the scalar packers above write. Before this, the scalar rounding
// (a call per element) took longer than the products: 40% of a bf16 training step against 26% in
// the VDPBF16PS tile (perf, the large bench model, 1 thread, Zen 5 kind), and the bf16 step ran
// slower than the fp32 one. Rows of A and columns of B past the matrix, and an odd K's last pair's high half,
// are zero, as there.
#define VLM_AVX512 __attribute__((target("avx512f")))

// Each lane shifted right by 16. The zero-masked form: GCC 12's plain _mm512_srli_epi32 starts from
// _mm512_undefined_epi32(), which werror turns into a false "may be used uninitialized" (PR 105593).
VLM_AVX512 inline __m512i srl16(__m512i x) { return _mm512_maskz_srli_epi32(0xffff, x, 16); }

// x's bf16 bits (to_bf16) in the high half of each 32-bit lane; the low halves are left over.
VLM_AVX512 inline __m512i bf16_high(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i odd = _mm512_and_si512(srl16(u), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd);
  return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

// Pairs from two vectors: lane l is (bf16 of hi[l]) << 16 | bf16 of lo[l].
VLM_AVX512 inline __m512i bf16_pairs2(__m512 lo, __m512 hi) {
  return _mm512_or_si512(_mm512_and_si512(bf16_high(hi), _mm512_set1_epi32(static_cast<int>(0xffff0000u))),
                         srl16(bf16_high(lo)));
}

// Pairs from 32 consecutive values along k (x0: k 0..15, x1: k 16..31): lane p is
// (bf16 of k 2p+1) << 16 | bf16 of k 2p: the even lanes of both vectors shifted down, or-ed with
// the odd lanes' high halves. (Two-source permutes, not VPMOVDW and a 256-bit insert, whose GCC 12
// intrinsics start from _mm512_undefined_*: a false "may be used uninitialized" under werror.)
VLM_AVX512 inline __m512i bf16_pairs_along(__m512 x0, __m512 x1) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i r0 = bf16_high(x0), r1 = bf16_high(x1);
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const __m512i lo = _mm512_permutex2var_epi32(srl16(r0), even, srl16(r1));
  return _mm512_or_si512(lo, _mm512_permutex2var_epi32(_mm512_and_si512(r0, hi), odd, _mm512_and_si512(r1, hi)));
}

VLM_AVX512 inline __mmask16 first_lanes(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// A 16 x 16 matrix of 32-bit words, r[row] lane col, transposed in place. Zero-masked forms of the
// shuffles for the reason given at srl16.
VLM_AVX512 inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_epi32(0xffff, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_epi32(0xffff, r[i], r[i + 1]);
  }
  // u[4g + j], 128-bit lane L: rows 4g .. 4g+3 of column 4L + j
  __m512i u[16];
  for (int g = 0; g < 16; g += 4) {
    u[g] = _mm512_maskz_unpacklo_epi64(0xff, t[g], t[g + 2]);
    u[g + 1] = _mm512_maskz_unpackhi_epi64(0xff, t[g], t[g + 2]);
    u[g + 2] = _mm512_maskz_unpacklo_epi64(0xff, t[g + 1], t[g + 3]);
    u[g + 3] = _mm512_maskz_unpackhi_epi64(0xff, t[g + 1], t[g + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // a 4 x 4 transpose of 128-bit lanes across u[j], u[4 + j], u[8 + j], u[12 + j]
    const __m512i a = _mm512_maskz_shuffle_i32x4(0xffff, u[j], u[4 + j], 0x44);
    const __m512i b = _mm512_maskz_shuffle_i32x4(0xffff, u[j], u[4 + j], 0xee);
    const __m512i c = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + j], u[12 + j], 0x44);
    const __m512i d = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + j], u[12 + j], 0xee);
    r[j] = _mm512_maskz_shuffle_i32x4(0xffff, a, c, 0x88);
    r[4 + j] = _mm512_maskz_shuffle_i32x4(0xffff, a, c, 0xdd);
    r[8 + j] = _mm512_maskz_shuffle_i32x4(0xffff, b, d, 0x88);
    r[12 + j] = _mm512_maskz_shuffle_i32x4(0xffff, b, d, 0xdd);
  }
}

// Up to 16 rows of values along k (row i at src + i·ld, k in [0, kc), times alpha unless alpha is 1)
// as pair words: pair p of row i goes to dst[p·stride + i], for i < width (rows from `rows` on are
// zero). 16 pairs (32 k) at a time: each row's 16 pair words into a vector, then a 16 x 16
// transpose, so that pair p's words for the rows are one vector, stored as one row of the panel.
VLM_AVX512 void pack_rows_pairs(const float* src, int64_t ld, int64_t rows, int width, int64_t kc, float alpha,
                                uint32_t* dst, int64_t stride) {
  const __m512 va = _mm512_set1_ps(alpha);
  const __mmask16 out = first_lanes(width);
  __m512i r[16];
  for (int64_t k = 0; k < kc; k += 32, dst += 16 * stride) {
    const int64_t left = kc - k;
    const __mmask16 m0 = first_lanes(left), m1 = first_lanes(left - 16);
    for (int i = 0; i < 16; ++i) {
      if (i >= rows) {
        r[i] = _mm512_setzero_si512();
        continue;
      }
      const float* x = src + i * ld + k;
      __m512 x0 = _mm512_maskz_loadu_ps(m0, x), x1 = _mm512_maskz_loadu_ps(m1, x + 16);
      if (alpha != 1.0f) {
        x0 = _mm512_maskz_mul_ps(m0, va, x0);
        x1 = _mm512_maskz_mul_ps(m1, va, x1);
      }
      r[i] = bf16_pairs_along(x0, x1);
    }
    transpose16(r);
    const int64_t pairs = std::min<int64_t>(16, (left + 1) / 2);
    for (int64_t p = 0; p < pairs; ++p) _mm512_mask_storeu_epi32(dst + p * stride, out, r[p]);
  }
}

VLM_AVX512 void pack_a_bf16_avx512(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                                   int64_t kc, float alpha, uint32_t* out) {
  static_assert(kBfMR <= 16);
  const int64_t kp = (kc + 1) / 2;
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t r = 0; r < mc; r += kBfMR, out += kp * kBfMR) {
    const int64_t rows = std::min<int64_t>(kBfMR, mc - r);
    if (trans_a) {  // A stored [K, M]: rows k and k+1 of A hold a pair's values for every i
      const __mmask16 m = first_lanes(rows), panel = first_lanes(kBfMR);
      for (int64_t p = 0; p < kp; ++p) {
        const float* lo = A + (p0 + 2 * p) * lda + i0 + r;
        const __m512 l = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, lo));
        const __m512 h = 2 * p + 1 < kc ? _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, lo + lda)) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(out + p * kBfMR, panel, _mm512_maskz_mov_epi32(m, bf16_pairs2(l, h)));
      }
    } else {  // A stored [M, K]: a row's pairs are contiguous. The scalar packer multiplies by alpha
              // always; x·1 is x, and to_bf16 quiets a signalling NaN either way.
      pack_rows_pairs(A + (i0 + r) * lda + p0, lda, rows, kBfMR, kc, alpha, out, kBfMR);
    }
  }
}

VLM_AVX512 void pack_b_bf16_avx512(bool trans_b, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                                   int64_t nc, uint32_t* out) {
  static_assert(kBfNR == 32);
  const int64_t kp = (kc + 1) / 2;
  for (int64_t s = 0; s < nc; s += kBfNR, out += kp * kBfNR) {
    const int64_t cols = std::min<int64_t>(kBfNR, nc - s);
    if (!trans_b) {  // B stored [K, N]: rows k and k+1 of B hold a pair's values for every column
      const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
      for (int64_t p = 0; p < kp; ++p) {
        const float* lo = B + (p0 + 2 * p) * ldb + j0 + s;
        const bool has_hi = 2 * p + 1 < kc;
        const __m512 l0 = _mm512_maskz_loadu_ps(m0, lo), l1 = _mm512_maskz_loadu_ps(m1, lo + 16);
        const __m512 h0 = has_hi ? _mm512_maskz_loadu_ps(m0, lo + ldb) : _mm512_setzero_ps();
        const __m512 h1 = has_hi ? _mm512_maskz_loadu_ps(m1, lo + ldb + 16) : _mm512_setzero_ps();
        _mm512_store_si512(out + p * kBfNR, bf16_pairs2(l0, h0));
        _mm512_store_si512(out + p * kBfNR + 16, bf16_pairs2(l1, h1));
      }
    } else {  // B stored [N, K]: column j of op(B) is row j of B, its pairs contiguous
      const float* b = B + (j0 + s) * ldb + p0;
      pack_rows_pairs(b, ldb, cols, 16, kc, 1.0f, out, kBfNR);
      pack_rows_pairs(cols > 16 ? b + 16 * ldb : b, ldb, cols - 16, 16, kc, 1.0f, out + 16, kBfNR);
    }
  }
}
#undef VLM_AVX512
#endif

GemmKernel parse_env() {
  const char* v = std::getenv("VLMLAB_GEMM");
  if (v == nullptr || *v == '\0') return best_gemm_kernel();
  const std::string s = v;
  for (GemmKernel k : {GemmKernel::kOpenBlas, GemmKernel::kPortable, GemmKernel::kAvx2, GemmKernel::kAvx512}) {
    if (s != gemm_kernel_name(k)) continue;
    if (gemm_kernel_available(k)) return k;
    std::fprintf(stderr, "VLMLAB_GEMM=%s: this CPU cannot run it (%s)\n", v, cpu_summary().c_str());
    std::abort();
  }
  std::fprintf(stderr, "VLMLAB_GEMM=%s: not a kernel (openblas, portable, avx2, avx512)\n", v);
  std::abort();
}

GemmKernel& chosen() {
  static GemmKernel k = parse_env();
  return k;
}

}  // namespace

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::kOpenBlas: return "openblas";
    case GemmKernel::kPortable: return "portable";
    case GemmKernel::kAvx2: return "avx2";
    case GemmKernel::kAvx512: return "avx512";
  }
  return "?";
}

bool gemm_kernel_available(GemmKernel k) {
  const CpuFeatures& f = cpu_features();
  switch (k) {
    case GemmKernel::kOpenBlas:
    case GemmKernel::kPortable: return true;
    case GemmKernel::kAvx2: return VLM_X86 && f.avx2 && f.fma;
    case GemmKernel::kAvx512: return VLM_X86 && f.avx512f;
  }
  return false;
}

GemmKernel best_gemm_kernel() {
  if (gemm_kernel_available(GemmKernel::kAvx512)) return GemmKernel::kAvx512;
  if (gemm_kernel_available(GemmKernel::kAvx2)) return GemmKernel::kAvx2;
  return GemmKernel::kPortable;
}

GemmKernel gemm_kernel() { return chosen(); }

void set_gemm_kernel(GemmKernel k) {
  if (!gemm_kernel_available(k)) {
    std::fprintf(stderr, "set_gemm_kernel(%s): this CPU cannot run it (%s)\n", gemm_kernel_name(k),
                 cpu_summary().c_str());
    std::abort();
  }
  chosen() = k;
}

void sgemm_packed(GemmKernel kind, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (beta != 0.0f && beta != 1.0f)  // the chains start from beta·C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] *= beta;
  if (K <= 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  const Geometry& g = geometry(kind);
  const int mr = g.mr, nr = g.nr;
  const int64_t kc_max = std::min(g.kc, K);
  const int64_t nc_max = std::min(g.nc, (N + nr - 1) / nr * nr);
  const int64_t mc_max = std::min(g.mc, (M + mr - 1) / mr * mr);
  float* bp = t_bpack.get(static_cast<std::size_t>(kc_max * nc_max));
  float* ap = t_apack.get(static_cast<std::size_t>(kc_max * mc_max));
  alignas(64) float edge[kMaxTile] = {};  // rows and columns past C stay defined (and finite)
  for (int64_t jc = 0; jc < N; jc += g.nc) {
    const int64_t nc = std::min(g.nc, N - jc);
    for (int64_t pc = 0; pc < K; pc += g.kc) {
      const int64_t kc = std::min(g.kc, K - pc);
      const bool load = pc > 0 || beta != 0.0f;
      pack_b(trans_b, B, ldb, pc, kc, jc, nc, nr, bp);
      for (int64_t ic = 0; ic < M; ic += g.mc) {
        const int64_t mc = std::min(g.mc, M - ic);
        pack_a(trans_a, A, lda, ic, mc, pc, kc, mr, alpha, ap);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const float* b = bp + (jr / nr) * kc * nr;
          const int64_t cols = std::min<int64_t>(nr, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const float* a = ap + (ir / mr) * kc * mr;
            float* c = C + (ic + ir) * ldc + jc + jr;
            const int64_t rows = std::min<int64_t>(mr, mc - ir);
            // The next tile down, or at the block's foot the top of the next column panel (only
            // prefetched: an address past C's rows is never read).
            const float* next = ir + mr < mc ? c + mr * ldc : C + ic * ldc + jc + std::min(jr + nr, nc - 1);
            if (rows == mr && cols == nr) {
              g.tile(kc, a, b, c, ldc, load, next);
              continue;
            }
            if (load)
              for (int64_t i = 0; i < rows; ++i) std::copy(c + i * ldc, c + i * ldc + cols, edge + i * nr);
            g.tile(kc, a, b, edge, nr, load, next);
            for (int64_t i = 0; i < rows; ++i) std::copy(edge + i * nr, edge + i * nr + cols, c + i * ldc);
          }
        }
      }
    }
  }
}

uint16_t to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN: keep it quiet
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

bool bf16_hardware() { return VLM_X86 && cpu_features().avx512_bf16; }

void sgemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm_bf16_on(bf16_hardware(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm_bf16_on(bool hardware, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (hardware && !bf16_hardware()) {
    std::fprintf(stderr, "sgemm_bf16_on: this CPU has no AVX512_BF16 (%s)\n", cpu_summary().c_str());
    std::abort();
  }
  if (M <= 0 || N <= 0) return;
  if (beta != 0.0f && beta != 1.0f)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] *= beta;
  if (K <= 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  TileBf16Fn tile = tile_bf16_portable;
  auto pack_a16 = pack_a_bf16;
  auto pack_b16 = pack_b_bf16;
#if VLM_X86
  if (hardware) {
    tile = tile_bf16_avx512;
    pack_a16 = pack_a_bf16_avx512;
    pack_b16 = pack_b_bf16_avx512;
  }
#endif
  constexpr int64_t kKC = 1024, kMC = 48, kNC = 1024;  // as the fp32 kernels (kKC even: pairs never straddle)
  const int64_t kc_max = std::min(kKC, K + (K & 1)), nc_max = std::min(kNC, (N + kBfNR - 1) / kBfNR * kBfNR),
                mc_max = std::min(kMC, (M + kBfMR - 1) / kBfMR * kBfMR);
  uint32_t* bp = t_bpack16.get(static_cast<std::size_t>(kc_max / 2 * nc_max));
  uint32_t* ap = t_apack16.get(static_cast<std::size_t>(kc_max / 2 * mc_max));
  alignas(64) float edge[kBfMR * kBfNR] = {};
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t nc = std::min(kNC, N - jc);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc), kp = (kc + 1) / 2;
      const bool load = pc > 0 || beta != 0.0f;
      pack_b16(trans_b, B, ldb, pc, kc, jc, nc, bp);
      for (int64_t ic = 0; ic < M; ic += kMC) {
        const int64_t mc = std::min(kMC, M - ic);
        pack_a16(trans_a, A, lda, ic, mc, pc, kc, alpha, ap);
        for (int64_t jr = 0; jr < nc; jr += kBfNR) {
          const uint32_t* b = bp + (jr / kBfNR) * kp * kBfNR;
          const int64_t cols = std::min<int64_t>(kBfNR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += kBfMR) {
            const uint32_t* a = ap + (ir / kBfMR) * kp * kBfMR;
            float* c = C + (ic + ir) * ldc + jc + jr;
            const int64_t rows = std::min<int64_t>(kBfMR, mc - ir);
            if (rows == kBfMR && cols == kBfNR) {
              tile(kp, a, b, c, ldc, load);
              continue;
            }
            if (load)
              for (int64_t i = 0; i < rows; ++i) std::copy(c + i * ldc, c + i * ldc + cols, edge + i * kBfNR);
            tile(kp, a, b, edge, kBfNR, load);
            for (int64_t i = 0; i < rows; ++i) std::copy(edge + i * kBfNR, edge + i * kBfNR + cols, c + i * ldc);
          }
        }
      }
    }
  }
}

}  // namespace vlm::detail
