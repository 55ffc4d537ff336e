// Per-family benchmarks at the bench sizes of `vlmlab bench-model` (small: the quickstart's sizes;
// large: hidden 256), on Sort-of-CLEVR samples: vision encode (the vision and connector phases of a
// batch-1 prefill), prefill at three image resolutions, decode per token with the KV cache (batch 1),
// and a training step (forward, loss, backward, AdamW) at batch 32. GFLOP/s come from the FLOPs the
// ops count.
//   build/bench/bench_families --benchmark_filter='llava/large'
// Names: <family>/<size>/<what>[/res:<side>]/threads:<n>.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "experiments/bench_model.h"
#include "experiments/runner.h"
#include "lib/core/parallel.h"
#include "lib/data/task.h"
#include "lib/measure/flops.h"
#include "lib/measure/phase.h"
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

void train_step(benchmark::State& state, const std::string& family, const std::string& size) {
  Bench& b = bench(family, size);
  vlm::set_num_threads(static_cast<int>(state.range(0)));
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
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* family : {"llava", "flamingo", "fuyu", "qwen2vl"}) {
    for (const char* size : {"small", "large"}) {
      const std::string name = std::string(family) + "/" + size + "/";
      benchmark::RegisterBenchmark((name + "vision_encode").c_str(), vision_encode, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseManualTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "prefill").c_str(), prefill, family, size)
          ->ArgsProduct({{75, 150, 225}, {1, 2}})->ArgNames({"res", "threads"})->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "decode").c_str(), decode, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseManualTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((name + "train_step").c_str(), train_step, family, size)
          ->ArgName("threads")->DenseRange(1, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
