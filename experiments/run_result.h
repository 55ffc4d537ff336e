// What one run of an experiment produced: the record the runner fills (experiments/runner.h) and
// the results file writes (experiments/results.h), apart from both so neither includes the other.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "training/train.h"
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


// Statistics of a run's samples (runner.cpp), which the results file's summary uses too.
double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // linear interpolation, p in [0, 100]

}  // namespace vlm::exp
