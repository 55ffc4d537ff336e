// Experiment configs (TOML): parsing, validation before anything runs, and expansion into runs.
// Every error is `file:line:col: key.path: what was expected` (ConfigError, exit code 2).
// The format is documented in README.md ("Experiment configs") and experiments/quickstart.toml.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "architectures/model_sizes.h"
#include "training/train.h"
#include "lib/data/task.h"

namespace vlm::exp {

struct EvalOptions {
  int64_t samples = 400;  // test indices [0, samples): scored once, after training
  int batch_size = 32;
  int gallery = 16;       // test items kept with their predictions, spread evenly over the test set
  bool keep_items = false;  // every test item with its prediction in /runs/<id>/items
  // The learning curve: validation indices [0, val_samples) scored before the first step, every
  // `every` steps (0: a tenth of the steps) and after the last. val_samples 0: no curve.
  int64_t val_samples = 200;
  int every = 0;
  // Steps-to-threshold in the report: the first curve step whose validation accuracy reaches this
  // fraction of the run's final validation accuracy.
  double threshold = 0.9;
  int every_or_default(int steps) const { return every > 0 ? every : std::max(1, (steps + 9) / 10); }
};

struct MeasureOptions {
  bool enabled = true;
  std::vector<int64_t> resolutions;  // square image sides; empty: the task's image size
  int warmup = 2, repeats = 10;
  int decode_tokens = 8;  // decode steps timed per repeat
};

struct Variant {
  std::string name, family;
  nlohmann::json family_keys = nlohmann::json::object();
  nlohmann::json processor = nlohmann::json::object();
  std::vector<std::pair<std::string, double>> init_std;  // `init_std = { "glob" = std }` (VlmSpec::init_std)
};

// [[train.phase]]: a curriculum step. The first phase's `steps` training steps use the task with
// `task` overriding [task]'s parameters, the next phase's follow, and the rest of train.steps use
// [task] itself.
struct TrainPhase {
  int steps = 0;
  data::Params task_params;  // [task]'s parameters with the phase's overrides
};

// A stage of every run ([[stage]]; an experiment without them has one, "train", from [train] and
// [task]): steps with their own task, optimizer and schedule, starting from the weights the previous
// stage ended with, training only what it selects. Selectors (architectures/transfer.h) are the
// components "vision", "connector", "lm" or globs over HF parameter names.
struct Stage {
  std::string name;
  // One task (its name and parameters), or a weighted mix of tasks when `mix` is not empty.
  std::string task;
  data::Params task_params;
  struct MixPart {
    std::string task;
    data::Params params;
    double weight = 1;
  };
  std::vector<MixPart> mix;
  TrainOptions train;              // steps, batch size, optimizer, schedule (defaults: [train])
  std::vector<TrainPhase> phases;  // [[train.phase]], in the stage of an experiment without [[stage]]
  std::vector<std::string> trains, freezes;  // at most one given; neither: everything trains
  std::vector<std::pair<std::string, double>> lr_scale;         // selector -> learning-rate multiplier
  std::vector<std::pair<std::string, std::string>> init_from;  // selector -> kept model or FILE.h5:RUN
  // "file:line:col: stage[i].key" of the stage and each key, for errors found once a model is built.
  std::map<std::string, std::string> where;
  // The task as text for the results file: "sort_of_clevr {mode=describe}" or "mix(...)".
  std::string task_text() const;
};
// The stage's task (a mix of its parts where it has several).
std::unique_ptr<data::Task> make_stage_task(const Stage& s);

struct Experiment {
  std::string file;  // for messages
  std::string name, description;
  std::vector<uint64_t> seeds{0};
  int threads = 1;
  std::string task;
  data::Params task_params;
  TrainOptions train;
  std::vector<TrainPhase> train_phases;
  std::vector<Stage> stages;  // never empty once parsed; train.steps is their total
  bool staged = false;        // the file has [[stage]] tables
  EvalOptions eval;
  MeasureOptions measure;
  ModelSizes sizes;
  std::vector<Variant> variants;
};

struct RunSpec {
  std::string run_id;  // variant[-key=value...]-s<seed>: unique in the experiment, safe as an HDF5 name
  Variant variant;
  uint64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> sweep_point;  // (key, value as written)
  Experiment config;          // this run's resolved config (sweep applied, one variant, one seed)
  std::string resolved_toml;  // the same, as TOML text
  // Estimated FLOPs of the whole run (training, evaluation, measurement), for spreading runs over MPI
  // ranks: FLOPs counted by the ops on one prefill of the run's model, scaled by the work the config asks.
  double cost_flops = 0;
  VlmSpec vlm_spec() const;
};

struct LoadedExperiment {
  Experiment base;
  std::string toml_text;  // the file as written
  std::vector<RunSpec> runs;
};

// Parses and validates the file, expands variants x sweep points x seeds, and builds each run's
// model once to reject impossible combinations, all before anything runs. `ranks`: the processes of
// the job that will run it (a data-parallel batch must divide by them). Each run's estimated cost
// (RunSpec::cost_flops) comes from the same model builds.
LoadedExperiment load_experiment(const std::string& path, int ranks = 1);
// The same on the file's text; `path` names it in messages (the fuzz target's entry point).
LoadedExperiment load_experiment_text(const std::string& text, const std::string& path, int ranks = 1);

}  // namespace vlm::exp
