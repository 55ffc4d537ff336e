// A trainable vision-language model for a task: one family's Architecture, its Processor and a
// word-level vocabulary built from the task, with the training batch and loss, and greedy answers.
// The training layer (training/: this, train.h, evaluate.h, cost.h) sits between the families and
// the experiments: it is written once against the Architecture / Processor interfaces, so every
// family is trained, scored and measured by the same code.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "architectures/architecture.h"
#include "architectures/budget.h"
#include "architectures/model_sizes.h"
#include "architectures/processor.h"
#include "lib/data/task.h"
#include "lib/data/vocab.h"

namespace vlm {

// The vocabulary every family shares for a task: SpecialTokens' ids first, then the task's words,
// then the words of `more` tasks it lacks (the tasks of a run's other stages), so the task's words
// have the same ids with or without them.
data::Vocab task_vocab(const data::Task& task, const std::vector<const data::Task*>& more = {});
// The same with a family's own special tokens appended after every task word (FamilyEntry::own_tokens),
// their ids written into tokens->own: the shared ids and the task words' ids do not move.
data::Vocab family_vocab(const data::Task& task, const std::vector<const data::Task*>& more,
                         std::span<const std::string_view> own_tokens, SpecialTokens* tokens);

// The words of a model save() kept, in id order (DIR/vlmlab.json's "vocabulary"); a ConfigError
// when the file is missing, not JSON or has no such list.
std::vector<std::string> kept_vocabulary(const std::string& model_dir);
// The first id at which `theirs` (a kept model's words) and `ours` differ, as "id I: "A" there, "B"
// here" (a missing word reads "(none)"), or "" when they agree: on ours' ids only when `prefix` (a
// model trained on more tasks holds more words after them), on both whole lists otherwise.
std::string vocabulary_difference(const std::vector<std::string>& theirs, const data::Vocab& ours, bool prefix);

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

}  // namespace vlm
