// Generated tasks: every sample is a pure function of (seed, split, index); train, validation and
// test come from disjoint streams (no scene is in two splits), and every answer can be recomputed
// from the scene.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "lib/data/image.h"

namespace vlm::data {

// Train: what training draws from. Validation: what everything that chooses reads (evaluation during
// training, picking settings in a sweep). Test: scored once per run, at the end.
enum class Split { kTrain, kValidation, kTest };
const char* split_name(Split split);  // "train", "validation", "test"
// "train", "validation" or "test"; anything else throws vlm::Error naming `what` and the value.
Split parse_split(const std::string& name, const std::string& what);

// One question. The prompt is words; the word kImageWord marks where the k-th image goes (a family's
// processor expands it into its own layout). Answers are one or more tokens (OCR `read`: one per
// character).
inline constexpr const char* kImageWord = "<image>";

// Words joined by single spaces (a prompt or answer as text: evaluation's tables, `vlmlab sample`).
std::string join_words(const std::vector<std::string>& words);

struct Sample {
  std::vector<Image> images;
  std::vector<std::string> prompt;  // e.g. {"<image>", "what", "shape", "is", "the", "red", "object", "?"}
  std::vector<std::string> answer;  // e.g. {"circle"}
  std::string subtype;              // e.g. "shape", "closest"
};

// A task parameter's value as written in a config (TOML integer, float, bool or string).
using ParamValue = std::variant<int64_t, double, bool, std::string>;
using Params = std::map<std::string, ParamValue>;

// One knob of a task: its default, allowed range, and what it means. A runner validates a config
// against these before anything runs.
struct ParamSpec {
  std::string key;
  ParamValue default_value;
  double min = 0, max = 0;  // inclusive range for numbers (ignored for bool/string)
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::string help;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // Deterministic in (seed, split, index) alone; no two splits share a scene.
  virtual Sample sample(Split split, uint64_t index) const = 0;
  virtual std::vector<std::string> subtypes() const = 0;
  // Every word a prompt or answer can contain (kImageWord excluded), in a fixed order.
  virtual std::vector<std::string> vocabulary() const = 0;
  // Accuracy of uniform guessing among the subtype's possible answers.
  virtual double chance(const std::string& subtype) const = 0;
  // How the task is scored (lib/data/metrics.h): exact match always; the first name is the headline
  // (the summary's and the report's score). ocr: character error rate first; counting: exact match
  // with mean absolute error beside it.
  virtual std::vector<std::string> metrics() const { return {"exact_match"}; }
  virtual int max_answer_tokens() const = 0;
  virtual int max_images() const = 0;
  // Image sizes this task produces (height, width) at most; for the runner's cost tables.
  virtual std::pair<int64_t, int64_t> max_image_size() const = 0;
  // The scene of sample `index` in words, with the sample's images: every object with its colour,
  // shape and position (sort_of_clevr, counting, multi_image), the string (ocr). The answer of the
  // "describe" and "text" modes (make_task's `mode` parameter), for pretraining and alignment. Every
  // task of the registry has it; a task without it (a test's own) throws.
  virtual Sample description(Split split, uint64_t index) const;
  // The words a description can hold, and the most it holds.
  virtual std::vector<std::string> description_words() const { return {}; }
  virtual int max_description_tokens() const { return 0; }
};

// The `mode` every task has: "question" (the task's questions), "describe" (the prompt is the image
// and the word "describe", the answer the image's description) or "text" (the same description with
// no image: text-only pretraining on the task's own language; the model sees no image).
inline constexpr const char* kDescribeWord = "describe";

// Samples drawn from several tasks by weight: sample i of a split comes from part k with probability
// weight_k / sum (a hash of i decides), at that part's index i. The vocabulary is the parts' in order,
// without repeats; subtypes likewise.
std::unique_ptr<Task> make_mix(std::vector<std::unique_ptr<Task>> parts, std::vector<double> weights);

// Every word of `tasks` in order (the first task's vocabulary first), without repeats.
std::vector<std::string> union_vocabulary(const std::vector<const Task*>& tasks);

struct TaskInfo {
  std::string name;
  std::string summary;
  std::vector<ParamSpec> params;  // includes "seed"
};

std::vector<TaskInfo> task_infos();
// Builds a task; `params` missing keys take their defaults; an unknown key, wrong type or value out of
// range throws vlm::Error naming the key.
std::unique_ptr<Task> make_task(const std::string& name, const Params& params);

}  // namespace vlm::data
