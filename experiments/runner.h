// Running an experiment: per run train, evaluate, measure; every completed run lands durably in the
// results file (HDF5 schema 1, docs/results.md) before the next starts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "architectures/vlm.h"
#include "experiments/config.h"

namespace vlm::exp {

struct LatencyRow {
  std::string phase;
  int64_t resolution = 0;
  std::vector<double> samples_ms;
};
struct MemoryRow {
  std::string phase;
  int64_t params = 0, grads = 0, optimizer = 0, activations = 0, kv_cache = 0, peak = 0, peak_rss = 0;
};
struct CostRow {
  int64_t resolution = 0, visual_tokens = 0, lm_tokens = 0, prefill_flops = 0, decode_flops_per_token = 0;
};

// One stage of a run as it ran (experiments/stages.h), for /runs/<id>/stages.
struct StageRecord {
  std::string name, task;
  std::string status = "trained";  // or "skipped" (the family has nothing the stage trains)
  std::string reason;
  int first_step = 0, steps = 0;   // the run's steps [first_step, first_step + steps)
  std::string trains, freezes, lr_scale, init_from;  // as configured, init_from with its sources
  int64_t trained_params = 0, frozen_params = 0;
};

struct RunResult {
  std::string run_id, family, variant;
  uint64_t seed = 0;
  std::string status = "failed", error;
  std::string resolved_config, sweep, started_utc, finished_utc;
  double wall_s = 0;
  ParamCounts params;
  std::vector<StepLog> train;
  std::vector<CurvePoint> curve;  // validation accuracy during training (each stage on its task)
  std::vector<StageRecord> stages;
  double curve_threshold = 0.9;   // [eval] threshold, for steps-to-threshold
  EvalResult eval;                // the test split, scored once after training
  std::string model_dir;          // the kept model, relative to the results file's folder
  int resumed_from = 0;           // the checkpoint step this process continued from (0: from scratch)
  std::vector<LatencyRow> latency;
  std::vector<MemoryRow> memory;
  std::vector<CostRow> cost;
  int gallery = 0;     // eval items kept in /runs/<id>/samples
  bool keep_items = false;  // every eval item in /runs/<id>/items ([eval] keep_items)
  int batch_size = 0;  // training batch
  int threads = 0;     // the thread count it ran with
  // Where it ran (MPI): the rank and host that wrote it, and how many ranks trained it (1 unless
  // data-parallel). Recorded as attributes of /runs/<id>; like timings, they may differ between two
  // runs of one experiment.
  int rank = 0, ranks = 1;
  std::string host;
  // The machine its timings come from (the file's root attributes name the machine that last wrote
  // the file, which folding part files made elsewhere makes a different one).
  std::string cpu;
  int64_t cores = 0;
};

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

double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // linear interpolation, p in [0, 100]
// The sample's images scaled (nearest neighbour) to side x side: the same scene at another
// resolution, so cost can be read against image size.
data::Sample at_resolution(data::Sample s, int64_t side);

}  // namespace vlm::exp
