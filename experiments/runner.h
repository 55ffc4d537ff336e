// Running an experiment: per run train, evaluate, measure; every completed run lands durably in the
// results file (HDF5 schema 1, docs/results.md) before the next starts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/config.h"
#include "experiments/run_result.h"

namespace vlm::exp {

// Phases, in table order. Their definitions (README "Measuring", lib/measure/phase.h): preprocess =
// the processor from raw RGB to model inputs; vision / connector = the marked regions of a prefill;
// lm_prefill = the rest of that prefill; prefill = the whole prefill; decode = one generated token
// with the KV cache; train_step = one training step (forward, backward, clip, AdamW) at the
// experiment's batch size.
const std::vector<std::string>& phase_names();

// Runs one spec to completion (never throws for a failure inside the run: it is recorded).
// data_parallel: every rank of the job calls this together and trains on its share of each batch
// (TrainOptions::dp_sum); the root then evaluates and measures alone, the other ranks return after
// training (their result is not recorded).
// `out`: the results file; the run's checkpoints and kept model go beside it (checkpoint.h), and a
// run with checkpoints there continues from the newest. experiment_toml: the experiment's text (a
// checkpoint of other text is refused).
struct Progress;
RunResult execute_run(const RunSpec& spec, Progress* progress, const std::string& out,
                      const std::string& experiment_toml, bool data_parallel = false);

struct RunOptions {
  std::string out;  // results file
  int threads = 0;  // 0: the experiment's
  std::string only; // substring (or glob with *) of run ids
  bool resume = false, overwrite = false, quiet = false;
};

// The whole experiment; returns the process exit code (0 all complete, 1 some failed).
int run_experiment(const LoadedExperiment& exp, const RunOptions& opt);

// The sample's images scaled (nearest neighbour) to side x side: the same scene at another
// resolution, so cost can be read against image size.
data::Sample at_resolution(data::Sample s, int64_t side);

}  // namespace vlm::exp
