// Op microbenchmarks. The matmul and attention benchmarks report GFLOP/s from the FLOPs the core
// counted (or, for raw sgemm, 2·M·N·K), so the tensor layer can be read against raw OpenBLAS at the
// same shapes; the memory-bound ops (norms, softmax, RoPE, cross-entropy) report bytes/s.
//   build/bench/bench_ops --benchmark_filter=matmul
// Tensor layer against raw sgemm, read side by side: run both in one process with repetitions in
// random order, or the later one pays for whatever the host did meanwhile (on the shared 2-core
// machine that alone made 4096x256x768 look 8% slower through the tensor layer; interleaved,
// the two are equal within 1%):
//   build/bench/bench_ops --benchmark_filter='BM_(sgemm_raw|matmul_tensor)/'
//     --benchmark_repetitions=12 --benchmark_enable_random_interleaving=true
//     --benchmark_report_aggregates_only=true   (one command line)
// Arguments: M, K, N, threads (matmul); T, causal(0/1) or blocks, threads (attention); bwd (0: forward
// only, 1: forward + backward) for the norms, softmax, RoPE, M-RoPE and cross-entropy.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "bench/fma_peak.h"
#include "lib/core/cpu.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/ops/attention.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/ops/ops.h"
#include "lib/ops/rope.h"
#include "lib/train/optimizer.h"

namespace {

using vlm::Shape;
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
    b->Args({35, 256, 1024, threads});  // a batch-1 prefill's rows through a 4x MLP (large size)
  }
  b->ArgNames({"M", "K", "N", "threads"})->UseRealTime();
}

// Raw OpenBLAS: its own threads, no tensor layer. B is [K, N], or with trans_b [N, K] (a linear
// layer's weight).
void sgemm_raw(benchmark::State& state, bool trans_b) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({M, K}, rng), b = Tensor::randn(trans_b ? Shape{N, K} : Shape{K, N}, rng);
  Tensor c = Tensor::zeros({M, N});
  openblas_set_num_threads(static_cast<int>(state.range(3)));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
                static_cast<blasint>(N), static_cast<blasint>(K), 1.0f, a.data(), static_cast<blasint>(K), b.data(),
                static_cast<blasint>(trans_b ? K : N), 0.0f, c.data(), static_cast<blasint>(N));
    benchmark::DoNotOptimize(c.data());
  }
  openblas_set_num_threads(1);
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
}

// The same product through the tensor layer (allocation of the output included, no grad): vlm::matmul,
// or with trans_b vlm::linear, as a prefill's projections run.
void tensor_product(benchmark::State& state, bool trans_b) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  vlm::set_num_threads(static_cast<int>(state.range(3)));
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({M, K}, rng), b = Tensor::randn(trans_b ? Shape{N, K} : Shape{K, N}, rng);
  vlm::NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor c = trans_b ? vlm::linear(a, b, Tensor()) : vlm::matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  vlm::set_num_threads(1);
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
}

// The machine's fp32 FMA peak, measured: chains of FMAs in registers at 512 and 256 bits, on 1 and 2
// threads at once (wall time). Skipped where the CPU lacks the width. The training step's effective
// GFLOP/s is read against it (bench_families' of_peak counter, `vlmlab bench-model`).
void BM_fma_peak(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  if (!vlm::bench::fma_width_available(bits)) {
    state.SkipWithError("this CPU lacks the width");
    return;
  }
  const int64_t n_iter = 1'000'000;
  for (auto _ : state) {
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += vlm::bench::fma_chains(bits, n_iter);
    benchmark::DoNotOptimize(sink);
  }
  set_gflops(state, vlm::bench::fma_flops_per_iter(bits) * static_cast<double>(n_iter) * threads);
  state.SetLabel(vlm::cpu_summary());
}
BENCHMARK(BM_fma_peak)->ArgsProduct({{256, 512}, {1, 2}})->ArgNames({"bits", "threads"})->UseRealTime();

// gemm() (the core's entry point: its thread split, then per thread the kernel) with each kernel
// this CPU has: 0 OpenBLAS (as OPENBLAS_CORETYPE and its table pick), 1 portable, 2 AVX2, 3 AVX-512.
// Training shapes of the large bench size (hidden 256, MLP 1024, 32 x 128 tokens): a projection's
// forward (A·Bᵀ), its input gradient (A·B) and its weight gradient (Aᵀ·B).
//   build/bench/bench_ops --benchmark_filter=BM_gemm_kernel --benchmark_repetitions=5
//     --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
void BM_gemm_kernel(benchmark::State& state) {
  const auto kernel = static_cast<vlm::detail::GemmKernel>(state.range(0));
  const int64_t M = state.range(1), K = state.range(2), N = state.range(3);
  const bool ta = state.range(4) != 0, tb = state.range(5) != 0;
  if (!vlm::detail::gemm_kernel_available(kernel)) {
    state.SkipWithError("this CPU cannot run the kernel");
    return;
  }
  const vlm::detail::GemmKernel before = vlm::detail::gemm_kernel();
  vlm::detail::set_gemm_kernel(kernel);
  vlm::set_num_threads(static_cast<int>(state.range(6)));
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn(ta ? Shape{K, M} : Shape{M, K}, rng);
  const Tensor b = Tensor::randn(tb ? Shape{N, K} : Shape{K, N}, rng);
  Tensor c = Tensor::zeros({M, N});
  for (auto _ : state) {
    vlm::gemm(ta, tb, M, N, K, 1.0f, a.data(), ta ? M : K, b.data(), tb ? K : N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  vlm::set_num_threads(1);
  vlm::detail::set_gemm_kernel(before);
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
  state.SetLabel(vlm::detail::gemm_kernel_name(kernel));
}
void gemm_kernel_shapes(benchmark::internal::Benchmark* b) {
  struct S {
    int64_t M, K, N, ta, tb;
  };
  const S shapes[] = {{4096, 256, 768, 0, 1},   // qkv projection forward
                      {4096, 768, 256, 0, 0},   // its input gradient
                      {768, 4096, 256, 1, 0},   // its weight gradient
                      {4096, 256, 1024, 0, 1},  // MLP up
                      {4096, 1024, 256, 0, 1},  // MLP down
                      {1024, 4096, 256, 1, 0},  // MLP up's weight gradient
                      {2048, 512, 2048, 0, 0},
                      {64, 128, 128, 0, 0},
                      {256, 256, 256, 0, 0}};
  for (int threads : {1, 2})
    for (int64_t kernel : {0, 2, 3})
      for (const S& s : shapes) b->Args({kernel, s.M, s.K, s.N, s.ta, s.tb, threads});
  b->ArgNames({"kernel", "M", "K", "N", "ta", "tb", "threads"})->UseRealTime();
}
BENCHMARK(BM_gemm_kernel)->Apply(gemm_kernel_shapes);

// bf16 inputs, fp32 accumulation (gemm_kernels.h: VDPBF16PS where the CPU has AVX512_BF16), on the
// calling thread, at the shapes of BM_gemm_kernel; read against its avx512 rows (threads:1).
void BM_gemm_bf16(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const bool ta = state.range(3) != 0, tb = state.range(4) != 0;
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn(ta ? Shape{K, M} : Shape{M, K}, rng);
  const Tensor b = Tensor::randn(tb ? Shape{N, K} : Shape{K, N}, rng);
  Tensor c = Tensor::zeros({M, N});
  for (auto _ : state) {
    vlm::detail::sgemm_bf16(ta, tb, M, N, K, 1.0f, a.data(), ta ? M : K, b.data(), tb ? K : N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  set_gflops(state, 2.0 * static_cast<double>(M * N * K));
  state.SetLabel(vlm::detail::bf16_hardware() ? "vdpbf16ps" : "emulated");
}
BENCHMARK(BM_gemm_bf16)
    ->Args({4096, 256, 768, 0, 1})
    ->Args({4096, 768, 256, 0, 0})
    ->Args({768, 4096, 256, 1, 0})
    ->Args({4096, 256, 1024, 0, 1})
    ->Args({4096, 1024, 256, 0, 1})
    ->Args({2048, 512, 2048, 0, 0})
    ->ArgNames({"M", "K", "N", "ta", "tb"})
    ->UseRealTime();

void BM_sgemm_raw(benchmark::State& state) { sgemm_raw(state, false); }
BENCHMARK(BM_sgemm_raw)->Apply(matmul_shapes);

void BM_matmul_tensor(benchmark::State& state) { tensor_product(state, false); }
BENCHMARK(BM_matmul_tensor)->Apply(matmul_shapes);

// Few rows through a linear layer (weight stored [N, K], as in a batch-1 prefill), against raw
// sgemm(NoTrans, Trans) on the same operands, with OpenBLAS's own threads. Read side by side as
// above: --benchmark_filter='BM_(sgemm_raw_nt|linear_few_rows)/' with random interleaving.
void few_row_shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    b->Args({35, 256, 1024, threads});  // a prefill's rows into the 4x MLP (large size)
    b->Args({35, 256, 256, threads});   // an attention projection
    b->Args({35, 1024, 256, threads});  // out of the MLP
  }
  b->ArgNames({"M", "K", "N", "threads"})->UseRealTime();
}

void BM_sgemm_raw_nt(benchmark::State& state) { sgemm_raw(state, true); }
BENCHMARK(BM_sgemm_raw_nt)->Apply(few_row_shapes);

void BM_linear_few_rows(benchmark::State& state) { tensor_product(state, true); }
BENCHMARK(BM_linear_few_rows)->Apply(few_row_shapes);

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

// Memory-bound ops report bytes/s (input read + output written, forward; the same again per
// gradient backward) and run forward only (bwd = 0) or forward + backward (bwd = 1).
constexpr int64_t kRows = 4096, kCols = 768;

template <class F>
void run_fwd_bwd(benchmark::State& state, Tensor x, F f) {
  const bool bwd = state.range(0) != 0;
  x.set_requires_grad(bwd);
  std::optional<vlm::NoGradGuard> no_grad;
  if (!bwd) no_grad.emplace();
  Tensor seed;
  for (auto _ : state) {
    Tensor y = f(x);
    if (bwd) {
      if (!seed.defined()) seed = Tensor::full(y.shape(), 1.0f);
      y.backward(seed);
      x.zero_grad();
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * (bwd ? 4 : 2) * x.numel() * 4);
}

void fwd_bwd_args(benchmark::internal::Benchmark* b) { b->ArgName("bwd")->DenseRange(0, 1)->UseRealTime(); }

void BM_layer_norm(benchmark::State& state) {
  vlm::Rng rng(1);
  const Tensor w = Tensor::randn({kCols}, rng), b = Tensor::randn({kCols}, rng);
  run_fwd_bwd(state, Tensor::randn({kRows, kCols}, rng), [&](const Tensor& x) { return vlm::layer_norm(x, w, b, 1e-5); });
}
BENCHMARK(BM_layer_norm)->Apply(fwd_bwd_args);

void BM_rms_norm(benchmark::State& state) {
  vlm::Rng rng(1);
  const Tensor w = Tensor::randn({kCols}, rng);
  run_fwd_bwd(state, Tensor::randn({kRows, kCols}, rng), [&](const Tensor& x) { return vlm::rms_norm(x, w, 1e-6); });
}
BENCHMARK(BM_rms_norm)->Apply(fwd_bwd_args);

void BM_softmax(benchmark::State& state) {
  vlm::Rng rng(1);
  run_fwd_bwd(state, Tensor::randn({kRows, 1024}, rng), [](const Tensor& x) { return vlm::softmax(x); });
}
BENCHMARK(BM_softmax)->Apply(fwd_bwd_args);

// Rotary embeddings on q [B=8, T=512, H=8, D=64]: 1-D RoPE, and Qwen2-VL's M-RoPE (sections
// 8/12/12 of D/2, positions (t, h, w) of a 16x16 image grid followed by text).
constexpr int64_t kRopeB = 8, kRopeT = 512, kRopeH = 8, kRopeD = 64;

void BM_rope(benchmark::State& state) {
  vlm::Rng rng(1);
  std::vector<int64_t> pos;
  for (int64_t b = 0; b < kRopeB; ++b)
    for (int64_t t = 0; t < kRopeT; ++t) pos.push_back(t);
  const vlm::RopeTables<float> r = vlm::rope_tables_1d<float>(pos, kRopeB, kRopeT, kRopeD, 10000.0);
  run_fwd_bwd(state, Tensor::randn({kRopeB, kRopeT, kRopeH, kRopeD}, rng),
              [&](const Tensor& x) { return vlm::rope(x, r.cos, r.sin); });
}
BENCHMARK(BM_rope)->Apply(fwd_bwd_args);

void BM_mrope(benchmark::State& state) {
  vlm::Rng rng(1);
  std::vector<int64_t> pos(static_cast<std::size_t>(3 * kRopeB * kRopeT));
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t b = 0; b < kRopeB; ++b)
      for (int64_t t = 0; t < kRopeT; ++t) {
        const int64_t img = std::min<int64_t>(t, 256);  // a 16x16 grid, then text
        const int64_t p = t < 256 ? (a == 0 ? 0 : a == 1 ? img / 16 : img % 16) : 16 + t - 256;
        pos[static_cast<std::size_t>((a * kRopeB + b) * kRopeT + t)] = p;
      }
  const vlm::RopeTables<float> r = vlm::mrope_tables<float>(pos, kRopeB, kRopeT, kRopeD, {8, 12, 12}, 1e6);
  run_fwd_bwd(state, Tensor::randn({kRopeB, kRopeT, kRopeH, kRopeD}, rng),
              [&](const Tensor& x) { return vlm::rope(x, r.cos, r.sin); });
}
BENCHMARK(BM_mrope)->Apply(fwd_bwd_args);

// Cross-entropy over [4096, V] logits, one target in 8 ignored.
void BM_cross_entropy(benchmark::State& state) {
  vlm::Rng rng(1);
  const int64_t V = 1024;
  std::vector<int64_t> targets;
  for (int64_t i = 0; i < kRows; ++i) targets.push_back(i % 8 == 0 ? -100 : (i * 7919) % V);
  run_fwd_bwd(state, Tensor::randn({kRows, V}, rng), [&](const Tensor& x) { return vlm::cross_entropy(x, targets); });
}
BENCHMARK(BM_cross_entropy)->Apply(fwd_bwd_args);

// One AdamW step over 3.2 M parameters in tensors shaped like the large bench model's
// (hidden 256: weights, biases, norms); memory-bound, so bytes/s over the 7 arrays it reads or
// writes (w, g, m, v in; w, m, v out). Argument: threads.
void BM_adamw(benchmark::State& state) {
  vlm::set_num_threads(static_cast<int>(state.range(0)));
  vlm::Rng rng(1);
  std::vector<vlm::OptParam<float>> params;
  int64_t total = 0;
  for (int rep = 0; rep < 4; ++rep)
    for (const Shape& shape : {Shape{768, 256}, Shape{256, 256}, Shape{1024, 256}, Shape{256, 1024}, Shape{256}, Shape{1024}}) {
      Tensor p = Tensor::randn(shape, rng);
      p.set_requires_grad(true);
      std::copy_n(Tensor::randn(shape, rng).data(), p.numel(), p.grad_data());
      params.push_back({"p", p, shape.size() == 2});
      total += p.numel();
    }
  vlm::AdamW<float> opt(params, vlm::AdamWConfig{});
  for (auto _ : state) opt.step();
  state.SetBytesProcessed(state.iterations() * 7 * total * int64_t{sizeof(float)});
  vlm::set_num_threads(1);
}
BENCHMARK(BM_adamw)->ArgName("threads")->DenseRange(1, 2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
