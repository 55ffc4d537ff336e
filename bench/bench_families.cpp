// Per-family benchmarks at the bench sizes of `vlmlab bench-model` (small: the quickstart's sizes;
// large: hidden 256), on Sort-of-CLEVR samples: vision encode (the vision and connector phases of a
// batch-1 prefill), prefill at three image resolutions, decode per token with the KV cache (batch 1),
// and a training step (forward, loss, backward, AdamW) at batch 32. GFLOP/s come from the FLOPs the
// ops count.
//   build/bench/bench_families --benchmark_filter='llava/large'
// Names: <family>/<size>/<what>[/res:<side>]/threads:<n>.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "architectures/generate.h"
#include "architectures/registry.h"
#include "bench/fma_peak.h"
#include "experiments/bench_model.h"
#include "experiments/checkpoint.h"
#include "experiments/runner.h"
#include "lib/core/parallel.h"
#include "lib/data/task.h"
#include "lib/measure/flops.h"
#include "lib/measure/phase.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/train/optimizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void set_gflops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// One model per (family, size), built on first use and kept: benchmarks time, they do not build.
struct Bench {
  std::unique_ptr<vlm::data::Task> task = vlm::data::make_task("sort_of_clevr", {});
  std::unique_ptr<vlm::Vlm> vlm;
  vlm::data::Sample sample = task->sample(vlm::data::Split::kTest, 0);
};

Bench& bench(const std::string& family, const std::string& size) {
  static std::map<std::string, std::unique_ptr<Bench>> cache;
  auto& b = cache[family + "/" + size];
  if (!b) {
    b = std::make_unique<Bench>();
    b->vlm = std::make_unique<vlm::Vlm>(vlm::exp::bench_model_spec(family, size), *b->task);
  }
  return *b;
}

vlm::Inputs prompt_at(Bench& b, int64_t side) {
  return b.vlm->processor().make_inputs({b.vlm->prompt(vlm::exp::at_resolution(b.sample, side))});
}

// The vision and connector phases of a batch-1 prefill at the task's image size.
void vision_encode(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(0)));
  const vlm::Inputs in = prompt_at(b, b.task->max_image_size().first);
  vlm::NoGradGuard no_grad;
  int64_t flops = 0;
  for (auto _ : state) {
    vlm::PhaseCapture cap;
    b.vlm->model().prefill(in);
    state.SetIterationTime((cap.ms("vision") + cap.ms("connector")) * 1e-3);
    flops = cap.flops("vision") + cap.flops("connector");
  }
  set_gflops(state, static_cast<double>(flops));
}

void prefill(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(1)));
  const vlm::Inputs in = prompt_at(b, state.range(0));
  vlm::NoGradGuard no_grad;
  int64_t flops = 0;
  for (auto _ : state) {
    const vlm::FlopScope f;
    auto out = b.vlm->model().prefill(in);
    benchmark::DoNotOptimize(out.first.data());
    flops = f.flops();
  }
  state.counters["tokens"] = static_cast<double>(in.shape("input_ids").at(1));
  set_gflops(state, static_cast<double>(flops));
}

// One iteration is one decoded token; every 16 tokens the prompt is prefilled again (untimed), so
// the context stays at prompt + 0..15 tokens.
void decode(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(0)));
  const vlm::Inputs in = prompt_at(b, b.task->max_image_size().first);
  vlm::NoGradGuard no_grad;
  std::unique_ptr<vlm::DecodeState> st;
  int64_t next = 0, made = 0, flops = 0;
  for (auto _ : state) {
    if (made % 16 == 0) {
      vlm::Tensor logits;
      std::tie(logits, st) = b.vlm->model().prefill(in);
      next = vlm::argmax_last(logits)[0];
    }
    const vlm::FlopScope f;
    const auto t0 = Clock::now();
    next = vlm::argmax_last(b.vlm->model().decode(*st, {next}))[0];
    state.SetIterationTime(seconds_since(t0));
    flops = f.flops();
    ++made;
  }
  set_gflops(state, static_cast<double>(flops));
}

// The machine's FMA peak at its widest vector width on `threads` threads (bench/fma_peak.h), measured
// once per thread count.
double fma_peak(int threads) {
  static std::map<int, double> peak;
  auto [it, fresh] = peak.try_emplace(threads, 0.0);
  if (fresh) it->second = vlm::bench::fma_peak_gflops(vlm::bench::fma_width_available(512) ? 512 : 256, threads);
  return it->second;
}

// A training step at batch 32, its products in fp32 (bf16:0) or bf16 (bf16:1, as [train] precision =
// "bf16" runs them). Counters: GFLOP/s (the FLOPs the ops count), of_peak (that as a fraction of the
// fp32 FMA peak measured here for the same thread count), peak_GFLOP/s; the label names the GEMM
// kernel (lib/ops/gemm_kernels.h).
void train_step(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(0)));
  const vlm::GemmPrecisionScope precision(state.range(1) != 0 ? vlm::GemmPrecision::kBf16 : vlm::GemmPrecision::kFp32);
  const vlm::Vlm::TrainBatch batch = b.vlm->train_batch(vlm::exp::bench_train_samples(*b.task, 32));
  vlm::AdamW<float> adam(vlm::named_parameters(b.vlm->model()), vlm::decay_matrices_only<float>,
                         vlm::AdamWConfig{.lr = 1e-6, .weight_decay = 0.01});
  int64_t flops = 0;
  for (auto _ : state) {
    const vlm::FlopScope f;
    vlm::Tensor loss = b.vlm->loss(batch);
    loss.backward();
    adam.step();
    adam.zero_grad();
    flops = f.flops();
  }
  set_gflops(state, static_cast<double>(flops));
  const double peak = fma_peak(static_cast<int>(state.range(0)));
  state.counters["peak_GFLOP/s"] = peak;
  state.counters["of_peak"] =
      benchmark::Counter(static_cast<double>(flops) * 1e-9 / peak, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string("gemm ") + vlm::detail::gemm_kernel_name(vlm::detail::gemm_kernel()) + " " +
                 vlm::gemm_precision_name(vlm::gemm_precision()));
}

// One checkpoint write (experiments/checkpoint.h) as the quickstart makes it: the model after a
// training step (so AdamW's moments exist) with a 3,000-step log and an 11-point curve, written durably
// into a temporary folder. The counter `overhead_every_500` is its time over 500 training steps at batch
// 32 (timed here first): the share of training time checkpointing costs at the quickstart's
// `checkpoint_every = 500`.
void checkpoint_save(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(0)));
  const vlm::Vlm::TrainBatch batch = b.vlm->train_batch(vlm::exp::bench_train_samples(*b.task, 32));
  vlm::AdamW<float> adam(vlm::named_parameters(b.vlm->model()), vlm::decay_matrices_only<float>,
                         vlm::AdamWConfig{.lr = 1e-6, .weight_decay = 0.01});
  std::vector<double> step_s;
  for (int k = 0; k < 5; ++k) {
    const auto t0 = Clock::now();
    vlm::Tensor loss = b.vlm->loss(batch);
    loss.backward();
    adam.step();
    adam.zero_grad();
    step_s.push_back(seconds_since(t0));
  }
  std::sort(step_s.begin(), step_s.end());
  vlm::TrainState st;
  st.steps_done = 3000;
  for (int k = 0; k < 3000; ++k) st.log.push_back(vlm::StepLog{.step = k, .loss = 0.5, .lr = 1e-4, .grad_norm = 1.0, .step_ms = 10.0, .flops = 1 << 20});
  for (int k = 0; k <= 10; ++k) {
    vlm::CurvePoint p{.step = 300 * k, .samples = 9600 * k, .train_flops = 1e12, .wall_s = 0, .scores = {}};
    for (const std::string& sub : b.task->subtypes()) p.scores.push_back(vlm::SubtypeScore{.subtype = sub, .n = 100});
    st.curve.push_back(p);
  }
  for (std::size_t i = 0; i < adam.params().size(); ++i) st.optimizer.push_back(adam.state(i));
  const std::string dir = (std::filesystem::temp_directory_path() / ("vlmlab_bench_ckpt_" + std::to_string(::getpid()))).string();
  const vlm::exp::CheckpointStore store(dir + "/r.h5", family, "experiment", "run", 2);
  double total = 0;
  int64_t n = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    store.save(*b.vlm, st);
    total += seconds_since(t0);
    ++n;
  }
  std::filesystem::remove_all(dir);
  state.counters["overhead_every_500"] = total / static_cast<double>(std::max<int64_t>(n, 1)) / (500 * step_s[2]);
  state.counters["train_step_ms"] = 1e3 * step_s[2];
}

}  // namespace

int main(int argc, char** argv) {
  for (const vlm::FamilyEntry& entry : vlm::families()) {  // every registry family, none named here
    const std::string family(entry.name);
    for (const char* size : {"small", "large"}) {
      const std::string name = family + "/" + size + "/";
      benchmark::RegisterBenchmark((name + "vision_encode").c_str(), vision_encode, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseManualTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "prefill").c_str(), prefill, family, size)
          ->ArgsProduct({{75, 150, 225}, {1, 2}})->ArgNames({"res", "threads"})->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "decode").c_str(), decode, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseManualTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "train_step").c_str(), train_step, family, size)
          ->ArgsProduct({{1, 2}, {0, 1}})->ArgNames({"threads", "bf16"})->UseRealTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "checkpoint_save").c_str(), checkpoint_save, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
