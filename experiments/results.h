// The results file, HDF5 schema 1 (docs/results.md). Each completed run is written
// durably: the whole file is rewritten into a temporary file (root metadata, every earlier run copied
// over, the new run, a fresh /summary) and renamed over the old one, so a crash at any moment leaves
// a file that opens and holds every completed run.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "experiments/config.h"
#include "experiments/run_result.h"
#include "lib/io/h5.h"

namespace vlm::exp {

inline constexpr int64_t kSchemaVersion = 1;

struct SummaryRow {
  std::string run_id, family, variant, status;
  int64_t seed = 0, params = 0, visual_tokens = 0, peak_bytes = 0;
  double accuracy = 0, prefill_ms = 0, decode_ms_per_token = 0, train_step_ms = 0;
  // The headline: the task's first metric (lib/data/metrics.h; "exact_match" is `accuracy`), its
  // value over every test item and its baseline (exact match: the majority rate).
  std::string metric = "exact_match";
  double score = 0, score_baseline = 0;
};

// The run's /summary row: accuracy overall, parameters, and visual tokens / prefill / decode at the
// first configured resolution (NaN / 0 where the run was not measured).
SummaryRow summary_of(const RunResult& r);

class ResultsFile {
 public:
  ResultsFile(std::string path, const LoadedExperiment& exp, int threads);
  // --resume: takes over the runs already in the file. The file must come from the same experiment
  // text (else a ConfigError: resuming would mix two experiments).
  void load_existing();
  bool is_complete(const std::string& run_id) const;
  void add(const RunResult& r);  // replaces an earlier (failed) record of the same run
  void add_nothing();            // writes the metadata and an empty summary if there is no file yet

  // Under MPI the root rank owns this file; every other rank writes its completed runs, the same
  // way, into a part file of its own (part_path), and the root folds the parts in. fold() takes
  // each run a part holds that this file lacks or holds as failed (one rewrite if any); a part from
  // another experiment text is a ConfigError. Returns the number of runs taken.
  int fold(const std::vector<std::string>& parts);
  // Puts /summary in `order` (run ids; others after them), rewriting only if it is not already.
  void put_in_order(const std::vector<std::string>& order);
  std::vector<std::string> run_ids() const;  // in /summary order

 private:
  void rewrite(const RunResult* r);
  // Writes the file anew with `rows`: a run's group comes from `fresh` if it is that run, else from
  // `from` (run id -> an open part file), else from the file as it is.
  void write(std::vector<SummaryRow> rows, const RunResult* fresh,
             const std::map<std::string, const io::H5File*>& from);
  std::string path_;
  const LoadedExperiment& exp_;
  int threads_;
  std::vector<SummaryRow> rows_;  // in the order runs completed
  // Root facts, read once; created_utc survives --resume (the file was created then).
  std::string created_utc_, cpu_, blas_, compiler_;
  bool have_file_ = false;        // path_ holds runs to carry over
};

// One writer per results file: an advisory lock (flock) on PATH.lock, held from the start of a run
// of the experiment to its end. A second `vlmlab run` on the same file (or a killed writer's part
// still running) is refused at start with a ConfigError naming the holder's pid, before it trains
// anything. The lock file stays beside the results file (removing it would let two writers lock two
// different files); the kernel releases the lock when the process ends, however it ends.
class ResultsLock {
 public:
  explicit ResultsLock(const std::string& path);
  ~ResultsLock();
  ResultsLock(const ResultsLock&) = delete;
  ResultsLock& operator=(const ResultsLock&) = delete;

 private:
  int fd_ = -1;
};

// Temporaries a killed writer left beside `path` (PATH.<pid>.<n>.tmp, and the PATH.tmp of older
// versions), removed by the writer that holds the lock; a symbolic link is removed, never followed.
void remove_stale_temps(const std::string& path);

// Rank `rank`'s part file beside the results file `path` (PATH.partR), and the part files there now.
std::string part_path(const std::string& path, int rank);
std::vector<std::string> part_files(const std::string& path);
void remove_part_files(const std::string& path);  // the parts, and .tmp files a killed writer left

// A run's progress while it trains: `partial` (status "running", its training rows and validation
// points so far, nothing scored or measured yet) written atomically to `path` in the results file's
// layout (/runs/<run_id>/train, curve, ...; root attributes experiment_name, schema_version, and
// steps_done / steps), so it can be read at any moment while the run goes on. The runner writes it
// to <results folder>/<stem>/progress/<run_id>.h5 (progress_path) and removes it once the run is
// recorded in the results file.
std::string progress_path(const std::string& results_path, const std::string& run_id);
std::string progress_dir(const std::string& results_path);  // the folder of the runs' progress files
void write_progress(const std::string& path, const std::string& experiment_name, const RunResult& partial,
                    int steps);

// Machine facts recorded with every result.
std::string cpu_model();
std::string blas_config();
std::string compiler_version();
std::string utc_now();  // ISO 8601, seconds, UTC

}  // namespace vlm::exp
