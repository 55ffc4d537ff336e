// Training a Vlm: the step loop (data stream, curriculum phases, stages with frozen parameters and
// lr multipliers, bf16 products, gradient clipping, AdamW), data-parallel training's gradient sum over
// ranks, validation points and checkpoint hooks, and resuming bit-identically from a TrainState.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lib/data/task.h"
#include "lib/train/optimizer.h"
#include "training/evaluate.h"
#include "training/vlm.h"

namespace vlm {

struct TrainOptions {
  int steps = 600;
  int batch_size = 32;
  double lr = 2e-3;
  double min_lr = 2e-4;
  int warmup_steps = -1;  // -1: 5% of steps
  std::string schedule = "cosine";
  double weight_decay = 0.01;
  double beta1 = 0.9, beta2 = 0.999;
  double grad_clip = 1.0;  // 0: off
  // [train] precision: "fp32", or "bf16": the step's matrix products with bf16 inputs and fp32
  // accumulation (lib/ops/gemm.h, GemmPrecision), weights, optimizer and loss staying fp32.
  std::string precision = "fp32";
  uint64_t data_seed = 0;  // which train samples: sample i of step s is train index mix64(seed·φ + s·B + i)
  bool data_parallel = false;  // [train] data_parallel: under mpirun, every rank trains on a share of each batch
  // [train] checkpoint_every / checkpoint_keep, read by the runner (experiments/runner.cpp): a checkpoint
  // every N steps (0: none), the last K kept.
  int checkpoint_every = 0;
  int checkpoint_keep = 2;
  // Set by the runner for a data-parallel run (experiments/dist.h); without dp_sum this process trains on
  // whole batches. Rank dp_rank of dp_ranks computes samples [B·r/n, B·(r+1)/n) of each global batch of B;
  // dp_sum sums a buffer element-wise over the ranks in a fixed order, giving every rank the same bits.
  int dp_rank = 0, dp_ranks = 1;
  std::function<void(std::span<double>)> dp_sum = {};
  // A curriculum: the first phases[0].steps steps draw their samples from phases[0].task, the next
  // phases[1].steps from phases[1].task, and so on; the remaining steps from the task train() is
  // given. One optimizer and one learning-rate schedule over all `steps`. The tasks must share the
  // model's vocabulary (the same task with other parameters does).
  struct Phase {
    int steps = 0;
    const data::Task* task = nullptr;
  };
  std::vector<Phase> phases = {};
  // A stage of a staged run (experiments: [[stage]]): train() runs steps [first_step, first_step +
  // steps) of the run's step count (the step index of StepLog and of the data stream) with its own
  // optimizer and schedule; `stage` indexes StepLog / CurvePoint. checkpoint_last: a later stage
  // follows, so the stage's last step is checkpointed like any other.
  int first_step = 0;
  int data_first_step = 0;  // the step whose samples the stage's first step draws (skipped stages count)
  int stage = 0;
  int64_t samples_before = 0;  // training samples of the earlier stages
  bool checkpoint_last = false;
  // Frozen parameters (HF names): no gradient, no optimizer state, bit-identical across train(). The
  // rest train, each at lr x lr_scale[name] (absent: 1).
  std::vector<std::string> frozen = {};
  std::map<std::string, double> lr_scale = {};
};

struct StepLog {
  int step = 0;
  int stage = 0;
  double loss = 0, lr = 0, grad_norm = 0, step_ms = 0;
  int64_t flops = 0;
};
// A step log column by column (the results file's /train table and a checkpoint both store it so).
struct StepColumns {
  std::vector<int64_t> step, stage, flops;
  std::vector<double> loss, lr, grad_norm, step_ms;
};
StepColumns step_columns(const std::vector<StepLog>& log);

// One point of a learning curve: the validation split scored after `step` training steps.
struct CurvePoint {
  int step = 0;
  int stage = 0;                     // the stage it scores (its task's validation split)
  int64_t samples = 0;               // training samples seen by then
  double train_flops = 0;            // FLOPs of those steps (counted by the ops, every rank)
  double wall_s = 0;                 // wall seconds of training so far, validation included
  std::vector<SubtypeScore> scores;  // per subtype, then "all"
};

// A training run in progress: what it has done, and all it needs besides the model's parameters to
// continue with the same bits (a checkpoint holds exactly this and the parameters).
struct TrainState {
  int steps_done = 0;
  std::vector<StepLog> log;       // one per step done
  std::vector<CurvePoint> curve;  // validation points so far
  double wall_s = 0;              // wall seconds spent so far (over every resumption)
  // AdamW's state per parameter, in named_parameters() order (empty before the first step; a
  // frozen parameter's is empty).
  std::vector<AdamW<float>::ParamState> optimizer;
};

// What train() calls back. Validation and checkpoints happen after a step, validation first, so a
// checkpoint holds the curve up to its step.
struct TrainHooks {
  std::function<void(const StepLog&)> on_step = {};
  // Scores the validation split where set: before the first step, after every `eval_every` steps
  // (0: only those two) and after the last.
  int eval_every = 0;
  std::function<std::vector<SubtypeScore>()> validate = {};
  // Where set: after every `checkpoint_every` steps except the last (the trained model is kept
  // instead), with the model's parameters as they are then.
  int checkpoint_every = 0;
  std::function<void(const TrainState&)> checkpoint = {};
};

// Trains in place from `state`: a fresh TrainState starts at step 0; one a checkpoint gave back
// (with the parameters it held loaded into the model) continues at state.steps_done, and the run
// then ends with the same bits as one never interrupted (same thread count). `state` is updated
// after every step, so it holds what was done even when this throws. A NaN/inf loss or gradient
// stops with a vlm::Error naming the step (nothing is updated with it).
void train(Vlm& vlm, const data::Task& task, const TrainOptions& opt, TrainState& state,
           const TrainHooks& hooks = {});

}  // namespace vlm
