// Checkpoints of runs in progress, and the trained models completed runs keep. Both live in the
// results file's artifacts folder (artifacts_dir): results/quickstart.h5 keeps
//   results/quickstart/checkpoints/<run_id>/step-<N>.ckpt   while the run trains (the last K)
//   results/quickstart/models/<run_id>/                      once it has completed
// A checkpoint is one safetensors file: the parameters ("param/<name>"), AdamW's moments
// ("adam_m/<name>", "adam_v/<name>") and, in its metadata, everything else train() needs to
// continue with the same bits (TrainState: steps done, the step log, the curve, AdamW's update
// counts) plus the experiment text and the run's resolved config it belongs to.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "training/train.h"
#include "lib/io/safetensors.h"

namespace vlm::exp {

// The folder beside a results file that holds its checkpoints, kept models and report:
// results/quickstart.h5 -> results/quickstart.
std::string artifacts_dir(const std::string& results_path);

class CheckpointStore {
 public:
  // `experiment_toml`: the experiment's text; `resolved_toml`: the run's own config. A checkpoint
  // written for other text is never loaded.
  CheckpointStore(const std::string& results_path, std::string run_id, std::string experiment_toml,
                  std::string resolved_toml, int keep);
  // Writes the checkpoint of `state` (the model holds the matching parameters) durably, then
  // removes all but the last `keep`. `extra`: what else the caller needs back (e.g. the memory
  // peaks of training so far), returned by load().
  void save(Vlm& vlm, const TrainState& state, const nlohmann::json& extra = nlohmann::json::object()) const;
  // The newest checkpoint's path (empty if none), and loading one: its parameters into `vlm`, its
  // state returned (and save()'s `extra` in *extra). One written from another config is a ConfigError.
  std::string latest() const;
  TrainState load(Vlm& vlm, const std::string& path, nlohmann::json* extra = nullptr) const;
  // A ConfigError unless the checkpoint at `path` was written for this experiment text and run config
  // (--resume checks every run's before anything trains; load() checks again).
  void check_belongs(const std::string& path) const;
  void remove_all() const;  // the run's checkpoints (once it has completed)
  const std::string& dir() const { return dir_; }

 private:
  std::vector<std::pair<int, std::string>> list() const;  // (step, path), oldest first
  void check_belongs(const io::Safetensors& st, const std::string& path) const;
  std::string dir_, run_id_, experiment_toml_, resolved_toml_;
  int keep_;
};

// Whether any run of this results file has checkpoints (a run was interrupted mid-training).
bool has_checkpoints(const std::string& results_path);
// Removes every checkpoint and kept model of this results file (--overwrite).
void remove_artifacts(const std::string& results_path);

// The folder a completed run's model is kept in, and the same relative to the results file's
// folder (what /runs/<id> records, so the pair can be moved together).
std::string model_dir(const std::string& results_path, const std::string& run_id);
std::string model_dir_relative(const std::string& results_path, const std::string& run_id);

}  // namespace vlm::exp
