#include "training/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <sstream>

#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/ops/gemm.h"
#include "lib/ops/ops.h"

namespace vlm {

namespace {

// Data-parallel training (TrainOptions::dp_sum), after this rank's backward: every gradient (weighted by
// the rank's share of the global batch), the loss and the step's FLOPs summed over the ranks, so each rank
// holds the global batch's mean gradients, the same bits everywhere. A parameter no rank has a gradient for
// keeps none, as in one process (AdamW skips it).
struct RankSums {
  double loss = 0;
  int64_t flops = 0;
};
RankSums sum_over_ranks(const std::vector<Tensor>& params, double loss, double share, int64_t flops,
                        const TrainOptions& opt) {
  std::size_t n = 0;
  for (const Tensor& p : params) n += static_cast<std::size_t>(p.numel());
  std::vector<double> buf;  // gradients, one has-a-gradient flag per parameter, loss, FLOPs
  buf.reserve(n + params.size() + 2);
  for (Tensor p : params) {
    if (!p.has_grad()) {
      buf.resize(buf.size() + static_cast<std::size_t>(p.numel()), 0.0);
      continue;
    }
    const float* g = p.grad_data();
    for (int64_t k = 0; k < p.numel(); ++k) buf.push_back(share * static_cast<double>(g[k]));
  }
  for (const Tensor& p : params) buf.push_back(p.has_grad() ? 1.0 : 0.0);
  buf.push_back(share * loss);
  buf.push_back(static_cast<double>(flops));
  opt.dp_sum(buf);
  std::size_t at = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    if (buf[n + i] > 0) {
      float* g = p.grad_data();
      for (int64_t k = 0; k < p.numel(); ++k) g[k] = static_cast<float>(buf[at + static_cast<std::size_t>(k)]);
    } else {
      p.zero_grad();
    }
    at += static_cast<std::size_t>(p.numel());
  }
  return RankSums{.loss = buf[n + params.size()], .flops = static_cast<int64_t>(buf[n + params.size() + 1])};
}

}  // namespace

StepColumns step_columns(const std::vector<StepLog>& log) {
  StepColumns c;
  for (const StepLog& l : log) {
    c.step.push_back(l.step);
    c.stage.push_back(l.stage);
    c.flops.push_back(l.flops);
    c.loss.push_back(l.loss);
    c.lr.push_back(l.lr);
    c.grad_norm.push_back(l.grad_norm);
    c.step_ms.push_back(l.step_ms);
  }
  return c;
}

void train(Vlm& vlm, const data::Task& task, const TrainOptions& opt, TrainState& state, const TrainHooks& hooks) {
  VLM_CHECK(opt.steps >= 0 && opt.batch_size > 0 && opt.first_step >= 0,
            "train: steps " << opt.steps << ", batch " << opt.batch_size << ", first step " << opt.first_step);
  const int end_step = opt.first_step + opt.steps;
  VLM_CHECK(state.steps_done >= opt.first_step && state.log.size() == static_cast<std::size_t>(state.steps_done),
            "train: cannot continue from step " << state.steps_done << " with " << state.log.size()
                                                << " logged steps in steps [" << opt.first_step << ", " << end_step
                                                << ")");
  // A stage that finished before the state was saved (a checkpoint of a later step) has nothing to do;
  // one saved at its last step leaves its optimizer behind (the next stage starts a fresh one).
  if (state.steps_done > end_step || (state.steps_done == end_step && opt.steps > 0)) {
    if (state.steps_done == end_step) state.optimizer.clear();
    return;
  }
  const auto t_enter = std::chrono::steady_clock::now();
  const double wall_before = state.wall_s;
  const auto wall_now = [&] {
    return wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_enter).count();
  };
  // The optimizer holds the parameters that train; a frozen one stops requiring a gradient for the
  // stage (so backward neither fills a buffer for it nor visits a branch only frozen ones feed) and
  // gets it back at the end, however train() ends.
  const NamedParams<float> all = named_parameters(vlm.model());
  std::vector<OptParam<float>> trained;
  std::vector<std::size_t> slot;  // named_parameters index of each optimizer parameter
  const std::set<std::string> frozen(opt.frozen.begin(), opt.frozen.end());
  std::vector<Tensor> frozen_tensors;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& [name, t] = all[i];
    if (frozen.count(name)) {
      frozen_tensors.push_back(t);
      continue;
    }
    const auto scale = opt.lr_scale.find(name);
    trained.push_back(OptParam<float>{.name = name,
                                      .param = t,
                                      .decay = decay_matrices_only<float>(name, t),
                                      .lr_scale = scale == opt.lr_scale.end() ? 1.0 : scale->second});
    slot.push_back(i);
  }
  VLM_CHECK(frozen_tensors.size() == frozen.size(), "train: " << frozen.size() << " frozen names, "
                                                              << frozen_tensors.size() << " of them parameters");
  VLM_CHECK(!trained.empty() || opt.steps == 0, "train: every parameter is frozen");
  struct Unfreeze {
    std::vector<Tensor>& ts;
    ~Unfreeze() {
      for (Tensor& t : ts) t.set_requires_grad(true);
    }
  } unfreeze{frozen_tensors};
  for (Tensor& t : frozen_tensors) {
    t.zero_grad();
    t.set_requires_grad(false);
  }
  AdamW<float> adam(std::move(trained),
                    AdamWConfig{.lr = opt.lr, .beta1 = opt.beta1, .beta2 = opt.beta2, .weight_decay = opt.weight_decay});
  if (!state.optimizer.empty()) {
    VLM_CHECK(state.optimizer.size() == all.size(),
              "train: optimizer state for " << state.optimizer.size() << " parameters, the model has " << all.size());
    for (std::size_t k = 0; k < slot.size(); ++k) adam.set_state(k, state.optimizer[slot[k]]);
    state.optimizer.clear();  // copied into the optimizer: not held twice
  }
  const LrSchedule sched{.kind = parse_lr_schedule(opt.schedule, "train.schedule"),
                         .lr = opt.lr,
                         .min_lr = opt.min_lr,
                         .warmup_steps = opt.warmup_steps >= 0 ? opt.warmup_steps : opt.steps / 20,
                         .total_steps = std::max(1, opt.steps)};
  std::vector<data::Sample> batch(static_cast<std::size_t>(opt.batch_size));
  const uint64_t base = opt.data_seed * 0x9E3779B97F4A7C15ULL;
  // Train indices are drawn by hashing a counter, not taken in order: consecutive indices share a scene
  // (sort_of_clevr asks 20 questions per image), so an in-order batch of 32 would hold two images.
  // Sample i of step s depends on (data_seed, s, i) alone, so a run continued from a checkpoint draws
  // what the uninterrupted run would have.
  int phase_steps = 0;
  for (const TrainOptions::Phase& p : opt.phases) {
    VLM_CHECK(p.steps >= 0 && p.task != nullptr, "train: a curriculum phase needs steps >= 0 and a task");
    phase_steps += p.steps;
  }
  VLM_CHECK(phase_steps <= opt.steps, "train: the curriculum's " << phase_steps << " steps exceed the " << opt.steps
                                                                 << " training steps");
  auto task_at = [&](int step) -> const data::Task& {
    step -= opt.first_step;
    for (const TrainOptions::Phase& p : opt.phases) {
      if (step < p.steps) return *p.task;
      step -= p.steps;
    }
    return task;
  };
  const auto validate_now = [&] {
    if (!hooks.validate) return;
    double flops = 0;
    for (const StepLog& l : state.log) flops += static_cast<double>(l.flops);
    CurvePoint p{.step = state.steps_done,
                 .stage = opt.stage,
                 .samples = opt.samples_before + static_cast<int64_t>(state.steps_done - opt.first_step) * opt.batch_size,
                 .train_flops = flops,
                 .scores = hooks.validate()};
    p.wall_s = wall_now();
    state.curve.push_back(std::move(p));
  };
  if (state.steps_done == opt.first_step && (state.curve.empty() || state.curve.back().stage != opt.stage))
    validate_now();
  for (int step = state.steps_done; step < end_step; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const FlopScope flops;
    // [train] precision = "bf16": this step's products in bf16 (not the validation after it).
    std::optional<GemmPrecisionScope> precision;
    if (opt.precision == "bf16") precision.emplace(GemmPrecision::kBf16);
    // Data-parallel: this rank draws and trains on its share [lo, hi) of the global batch, then the
    // gradients are summed over the ranks.
    const bool dp = opt.dp_sum && opt.dp_ranks > 1;
    const int lo = dp ? opt.batch_size * opt.dp_rank / opt.dp_ranks : 0;
    const int hi = dp ? opt.batch_size * (opt.dp_rank + 1) / opt.dp_ranks : opt.batch_size;
    const data::Task& step_task = task_at(step);
    for (int i = lo; i < hi; ++i)
      batch[static_cast<std::size_t>(i)] = step_task.sample(
          data::Split::kTrain,
          mix64(base + static_cast<uint64_t>(step - opt.first_step + opt.data_first_step) * static_cast<uint64_t>(opt.batch_size) +
                static_cast<uint64_t>(i)));
    Tensor loss = vlm.loss(vlm.train_batch(std::span<const data::Sample>(batch).subspan(
        static_cast<std::size_t>(lo), static_cast<std::size_t>(hi - lo))));
    double loss_v = loss.item();
    int64_t other_ranks_flops = 0;
    if (dp) {
      loss.backward();
      const int64_t mine = flops.flops();
      const RankSums sums = sum_over_ranks(adam.tensors(), loss_v, static_cast<double>(hi - lo) / opt.batch_size,
                                           mine, opt);
      loss_v = sums.loss;
      other_ranks_flops = sums.flops - mine;
    }
    if (!std::isfinite(loss_v)) {
      std::ostringstream os;
      os << "training diverged at step " << step << ": the loss is " << loss_v;
      throw Error(os.str());
    }
    if (!dp) loss.backward();
    const GradNormResult gn = opt.grad_clip > 0 ? clip_grad_norm(adam.tensors(), opt.grad_clip)
                                                : grad_norm(adam.tensors());
    if (!gn.finite) {
      std::ostringstream os;
      os << "training diverged at step " << step << ": the gradient norm is not finite";
      throw Error(os.str());
    }
    const double lr = sched.lr_at(step - opt.first_step);
    adam.step(lr);
    adam.zero_grad();
    precision.reset();
    StepLog s{.step = step,
              .stage = opt.stage,
              .loss = loss_v,
              .lr = lr,
              .grad_norm = gn.total_norm,
              .step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
              .flops = flops.flops() + other_ranks_flops};
    state.log.push_back(s);
    state.steps_done = step + 1;
    state.wall_s = wall_now();
    if (hooks.on_step) hooks.on_step(s);
    const bool last = state.steps_done == end_step;
    if (last || (hooks.eval_every > 0 && (state.steps_done - opt.first_step) % hooks.eval_every == 0)) validate_now();
    if ((!last || opt.checkpoint_last) && hooks.checkpoint && hooks.checkpoint_every > 0 &&
        state.steps_done % hooks.checkpoint_every == 0) {
      state.optimizer.assign(all.size(), AdamW<float>::ParamState{});
      for (std::size_t k = 0; k < slot.size(); ++k) state.optimizer[slot[k]] = adam.state(k);
      state.wall_s = wall_now();
      hooks.checkpoint(state);
      state.optimizer.clear();  // the optimizer's own tensors: not kept alive twice
    }
  }
  state.wall_s = wall_now();
}

}  // namespace vlm
