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
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  float* get(std::size_t n) {
    if (n > size_) {
      release();
      p_ = static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t{64}));
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
  float* p_ = nullptr;
  std::size_t size_ = 0;
};
thread_local Buffer t_apack, t_bpack;

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
  alignas(64) float edge[kMaxTile];
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

}  // namespace vlm::detail
