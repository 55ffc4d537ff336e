// A trainable vision-language model for a task: one family's Architecture, its Processor and a
// word-level vocabulary built from the task. Training, evaluation and cost accounting are written
// here once, against the Architecture / Processor interfaces, so every family is trained, scored
// and measured by the same code.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "architectures/architecture.h"
#include "architectures/budget.h"
#include "lib/data/metrics.h"
#include "lib/data/task.h"
#include "lib/data/vocab.h"
#include "lib/train/optimizer.h"

namespace vlm {

// The vocabulary every family shares for a task: SpecialTokens' ids first, then the task's words,
// then the words of `more` tasks it lacks (the tasks of a run's other stages), so the task's words
// have the same ids with or without them.
data::Vocab task_vocab(const data::Task& task, const std::vector<const data::Task*>& more = {});
// The same with a family's own special tokens appended after every task word (FamilyEntry::own_tokens),
// their ids written into tokens->own: the shared ids and the task words' ids do not move.
data::Vocab family_vocab(const data::Task& task, const std::vector<const data::Task*>& more,
                         std::span<const std::string_view> own_tokens, SpecialTokens* tokens);

struct VlmSpec {
  std::string family;               // registry name: llava, flamingo, fuyu, qwen2vl
  ModelSizes sizes;                 // vocab_size and tokens are filled from the task
  nlohmann::json family_keys;       // HF config keys of the family (may be null)
  nlohmann::json processor_options; // HF preprocessor_config keys (may be null)
  uint64_t init_seed = 0;
  // Re-initialisations applied after the family's own init: each parameter whose name (the HF name,
  // as in model.safetensors; `vlmlab check --params` lists them) matches a glob is redrawn from
  // N(0, std) (std 0: zeros), from a stream of its own, so every other parameter keeps its value. A
  // glob matching no parameter, or two globs matching one parameter, is a ConfigError.
  std::vector<std::pair<std::string, double>> init_std = {};
};

// Refuses, with a ConfigError, a model `spec` describes whose weights, or any of `uses`, would not
// fit the memory budget (architectures/budget.h), before anything is built: the parameters come from
// the family's config, each use's visual tokens from the family's processor at the use's image size.
void check_memory(const VlmSpec& spec, const data::Task& task, std::vector<Workload> uses);

struct ParamCounts {
  int64_t vision = 0, connector = 0, lm = 0;
  int64_t total() const { return vision + connector + lm; }
};

class Vlm {
 public:
  // `more`: other tasks the model will be trained on (a staged run's stages), whose words join the vocabulary.
  Vlm(const VlmSpec& spec, const data::Task& task, const std::vector<const data::Task*>& more = {});
  // A model that save() kept: DIR/config.json and DIR/model.safetensors (as transformers writes
  // them) and DIR/vlmlab.json (the vocabulary and the processor settings). `task`'s words must have
  // the ids the model gave them (else a ConfigError naming the first difference); a model trained on
  // more tasks holds more words after them.
  Vlm(const std::string& model_dir, const data::Task& task);
  // Writes the folder the constructor above reads; `extra` goes into vlmlab.json beside the
  // vocabulary and processor settings (e.g. the task and evaluation settings of the run). Each file
  // is written whole then renamed into place.
  void save(const std::string& dir, const nlohmann::json& extra = nlohmann::json::object());

  Architecture& model() { return *model_; }
  const Processor& processor() const { return *processor_; }
  const data::Vocab& vocab() const { return vocab_; }
  const nlohmann::json& hf_config() const { return hf_config_; }
  const std::string& family() const { return family_; }
  ParamCounts param_counts();

  // The prompt as its processor sees it: word ids with kImageMarker for each image.
  MultimodalSample prompt(const data::Sample& s) const;
  // Answer ids followed by EOS: what training predicts and generation must produce.
  std::vector<int64_t> target(const data::Sample& s) const;

  // Training inputs: each row is prompt + answer + EOS (left-padded), with the ids to predict.
  struct TrainBatch {
    Inputs inputs;
    std::vector<std::vector<int64_t>> targets;  // per row: answer ids + EOS (the row's last tokens)
  };
  TrainBatch train_batch(std::span<const data::Sample> samples) const;
  // Cross-entropy on the answer tokens only: each sample's mean over its answer tokens (+ EOS), then
  // the mean over samples, so a batch gives the same loss and gradients as its samples one by one.
  // Only the logits that predict answer tokens are computed (Architecture::forward's logits_to_keep,
  // which also skips the rest of the LM's last layer); all_logits computes every position's, as HF's
  // models do, for the same loss and gradients at the full forward's cost.
  Tensor loss(const TrainBatch& batch, bool all_logits = false);

  // Greedy answers with the KV cache, stopping at EOS (or after max_tokens): words per sample.
  std::vector<std::vector<std::string>> answer(std::span<const data::Sample> samples, int max_tokens);

 private:
  void reinitialise(const VlmSpec& spec);
  std::string family_;
  SpecialTokens tokens_;  // before vocab_: family_vocab fills tokens_.own while vocab_ is built
  data::Vocab vocab_;
  nlohmann::json hf_config_;
  nlohmann::json processor_options_;
  std::unique_ptr<Architecture> model_;
  std::unique_ptr<Processor> processor_;
};

// ---- training ----

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

// ---- evaluation ----

struct SubtypeScore {
  std::string subtype;  // or "all"
  int64_t n = 0, correct = 0;
  double accuracy = 0, chance = 0, majority = 0;
};
struct EvalItem {
  int64_t index = 0;
  std::string subtype, question, answer, prediction;
  bool correct = false;
};
struct EvalResult {
  std::string split;                 // the split scored: "validation" or "test"
  std::vector<SubtypeScore> scores;  // the task's subtypes that were asked, in order, then "all"
  std::vector<EvalItem> items;       // every item scored, in order
  // The task's scores beside exact match (Task::metrics, lib/data/metrics.h) with their baselines,
  // per subtype asked then "all"; `headline` names the task's first metric ("exact_match": the
  // scores' accuracy against the majority rate).
  std::vector<data::MetricScore> metrics;
  std::string headline = "exact_match";
};

// Indices [0, n) of the split's stream, greedy answers in batches, exact match. The majority
// baseline is the most frequent answer's share among the same items, per subtype ("all": the
// subtype-weighted mean of always answering each subtype's majority). A subtype with no item among
// them has no row.
EvalResult evaluate(Vlm& vlm, const data::Task& task, data::Split split, int64_t n, int batch_size = 32);

// ---- training ----

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

// ---- cost ----

struct InferenceCost {
  int64_t visual_tokens = 0, lm_tokens = 0;  // of the sample's images / its whole prompt
  int64_t prefill_flops = 0, decode_flops_per_token = 0;
};
// Batch 1 on one sample: prefill, then one decode step.
InferenceCost inference_cost(Vlm& vlm, const data::Sample& sample);

}  // namespace vlm
