// Op microbenchmarks. Every benchmark reports GFLOP/s from the FLOPs the core counted (or, for raw
// sgemm, 2·M·N·K), so the tensor layer can be read against raw OpenBLAS at the same shapes.
//   build/bench/bench_ops --benchmark_filter=matmul
// Arguments: M, K, N, threads (matmul); T, causal(0/1) or blocks, threads (attention).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/ops/attention.h"
#include "lib/ops/ops.h"

namespace {

using vlm::Tensor;

void set_gflops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void matmul_shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    b->Args({4096, 256, 768, threads});
    b->Args({4096, 768, 256, threads});
    b->Args({2048, 512, 2048, threads});
    b->Args({64, 128, 128, threads});
    b->Args({256, 256, 256, threads});
  }
  b->ArgNames({"M", "K", "N", "threads"})->UseRealTime();
}

// Raw OpenBLAS: its own threads, no tensor layer.
void BM_sgemm_raw(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({M, K}, rng), b = Tensor::randn({K, N}, rng);
  Tensor c = Tensor::zeros({M, N});
  openblas_set_num_threads(static_cast<int>(state.range(3)));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(N),
                static_cast<blasint>(K), 1.0f, a.data(), static_cast<blasint>(K), b.data(), static_cast<blasint>(N),
                0.0f, c.data(), static_cast<blasint>(N));
    benchmark::DoNotOptimize(c.data());
  }
  openblas_set_num_threads(1);
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
}
BENCHMARK(BM_sgemm_raw)->Apply(matmul_shapes);

// The same product through vlm::matmul (allocation of the output included, no grad).
void BM_matmul_tensor(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  vlm::set_num_threads(static_cast<int>(state.range(3)));
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({M, K}, rng), b = Tensor::randn({K, N}, rng);
  vlm::NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor c = vlm::matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  vlm::set_num_threads(1);
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
}
BENCHMARK(BM_matmul_tensor)->Apply(matmul_shapes);

// Linear layer forward + backward (dX and dW), as in a training step.
void BM_linear_fwd_bwd(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  vlm::set_num_threads(static_cast<int>(state.range(3)));
  vlm::Rng rng(1);
  Tensor x = Tensor::randn({M, K}, rng).set_requires_grad(true);
  Tensor w = Tensor::randn({N, K}, rng).set_requires_grad(true);
  const Tensor seed = Tensor::randn({M, N}, rng);
  int64_t flops = 0;
  for (auto _ : state) {
    vlm::FlopScope scope;
    Tensor y = vlm::linear(x, w, Tensor());
    y.backward(seed);
    flops = scope.flops();
  }
  vlm::set_num_threads(1);
  set_gflops(state, static_cast<double>(flops));
}
BENCHMARK(BM_linear_fwd_bwd)->Apply(matmul_shapes);

void attention_shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2})
    for (int64_t t : {64, 128, 256, 512, 1024}) {
      b->Args({t, 0, threads});  // causal
      b->Args({t, 4, threads});  // block-diagonal, 4 blocks
    }
  b->ArgNames({"T", "blocks", "threads"})->UseRealTime();
}

vlm::AttnMask bench_mask(int64_t T, int64_t blocks) {
  if (blocks == 0) {
    vlm::AttnMask m;
    m.causal = true;
    return m;
  }
  return vlm::block_diagonal_mask(std::vector<int64_t>(static_cast<std::size_t>(blocks), T / blocks));
}

constexpr int64_t kHeads = 4, kHeadDim = 64;

void BM_attention_fwd(benchmark::State& state) {
  const int64_t T = state.range(0);
  vlm::set_num_threads(static_cast<int>(state.range(2)));
  vlm::Rng rng(1);
  const Tensor q = Tensor::randn({1, T, kHeads, kHeadDim}, rng), k = Tensor::randn({1, T, kHeads, kHeadDim}, rng),
               v = Tensor::randn({1, T, kHeads, kHeadDim}, rng);
  const vlm::AttnMask mask = bench_mask(T, state.range(1));
  vlm::NoGradGuard no_grad;
  int64_t flops = 0;
  for (auto _ : state) {
    vlm::FlopScope scope;
    Tensor o = vlm::attention(q, k, v, mask, 0.125);
    benchmark::DoNotOptimize(o.data());
    flops = scope.flops();
  }
  vlm::set_num_threads(1);
  set_gflops(state, static_cast<double>(flops));
}
BENCHMARK(BM_attention_fwd)->Apply(attention_shapes);

void BM_attention_fwd_bwd(benchmark::State& state) {
  const int64_t T = state.range(0);
  vlm::set_num_threads(static_cast<int>(state.range(2)));
  vlm::Rng rng(1);
  Tensor q = Tensor::randn({1, T, kHeads, kHeadDim}, rng).set_requires_grad(true);
  Tensor k = Tensor::randn({1, T, kHeads, kHeadDim}, rng).set_requires_grad(true);
  Tensor v = Tensor::randn({1, T, kHeads, kHeadDim}, rng).set_requires_grad(true);
  const Tensor seed = Tensor::randn({1, T, kHeads, kHeadDim}, rng);
  const vlm::AttnMask mask = bench_mask(T, state.range(1));
  int64_t flops = 0;
  for (auto _ : state) {
    vlm::FlopScope scope;
    Tensor o = vlm::attention(q, k, v, mask, 0.125);
    o.backward(seed);
    flops = scope.flops();
  }
  vlm::set_num_threads(1);
  set_gflops(state, static_cast<double>(flops));
}
BENCHMARK(BM_attention_fwd_bwd)->Apply(attention_shapes);

void BM_layer_norm(benchmark::State& state) {
  vlm::Rng rng(1);
  const Tensor x = Tensor::randn({4096, 768}, rng), w = Tensor::randn({768}, rng), b = Tensor::randn({768}, rng);
  vlm::NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(vlm::layer_norm(x, w, b, 1e-5).data());
  state.SetBytesProcessed(state.iterations() * 2 * x.numel() * 4);
}
BENCHMARK(BM_layer_norm)->UseRealTime();

void BM_softmax(benchmark::State& state) {
  vlm::Rng rng(1);
  const Tensor x = Tensor::randn({4096, 1024}, rng);
  vlm::NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(vlm::softmax(x).data());
  state.SetBytesProcessed(state.iterations() * 2 * x.numel() * 4);
}
BENCHMARK(BM_softmax)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
