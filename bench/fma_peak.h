// The machine's fp32 FMA peak, measured rather than looked up: independent chains of fused
// multiply-adds in registers (more chains than FMA latency x pipes, so the pipes never wait), at
// 512-bit width (where the CPU has AVX-512) and 256-bit (AVX2 + FMA), on 1 or more threads at once.
// bench_ops reports it; bench_families divides a training step's GFLOP/s by it.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdint>

#include "lib/core/cpu.h"

namespace vlm::bench {

// Chains of FMAs, n_iter steps of each; returns a value that depends on all of them (so nothing is
// optimised away). 16 zmm chains (AVX-512) or 12 ymm chains (AVX2, 16 registers in all).
constexpr int kChains512 = 16, kChains256 = 12;

__attribute__((target("avx512f"), noinline)) inline float fma_chains_512(int64_t n_iter) {
  __m512 acc[kChains512];
  for (int j = 0; j < kChains512; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  for (int64_t i = 0; i < n_iter; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains512; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
  }
  __m512 s = acc[0];
  for (int j = 1; j < kChains512; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}

__attribute__((target("avx2,fma"), noinline)) inline float fma_chains_256(int64_t n_iter) {
  __m256 acc[kChains256];
  for (int j = 0; j < kChains256; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  for (int64_t i = 0; i < n_iter; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains256; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, c);
  }
  __m256 s = acc[0];
  for (int j = 1; j < kChains256; ++j) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

// FLOPs one call does per step: chains x lanes x 2.
inline double fma_flops_per_iter(int bits) {
  return bits == 512 ? double(kChains512) * 16 * 2 : double(kChains256) * 8 * 2;
}

inline float fma_chains(int bits, int64_t n_iter) {
  return bits == 512 ? fma_chains_512(n_iter) : fma_chains_256(n_iter);
}

// Whether the CPU has the width.
inline bool fma_width_available(int bits) {
  const CpuFeatures& f = cpu_features();
  return bits == 512 ? f.avx512f : f.avx2 && f.fma;
}

// GFLOP/s of `threads` threads each running chains at once, over wall time, best of `tries` runs of
// about 50 ms (best: on a shared machine the others' work only ever lowers it). 0 if the CPU lacks
// the width.
inline double fma_peak_gflops(int bits, int threads, int tries = 5) {
  if (!fma_width_available(bits)) return 0;
  const int64_t n_iter = bits == 512 ? 3'000'000 : 5'000'000;
  double best = 0;
  volatile float sink = 0;
  for (int t = 0; t < tries; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      const float r = fma_chains(bits, n_iter);
#pragma omp critical
      sink = sink + r;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double g = fma_flops_per_iter(bits) * static_cast<double>(n_iter) * threads / s * 1e-9;
    if (g > best) best = g;
  }
  return best;
}

}  // namespace vlm::bench
