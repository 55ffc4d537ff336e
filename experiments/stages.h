// What a stage does to one run's model (experiments: [[stage]]): which parameters it freezes, each
// trained one's learning-rate multiplier, which it takes from kept models, or why the family skips it.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "training/vlm.h"
#include "experiments/config.h"

namespace vlm::exp {

struct StagePlan {
  // A family without the parts a stage trains (fuyu has no vision tower) skips the stage.
  bool skipped = false;
  std::string reason;
  std::vector<std::string> frozen;         // HF names
  std::map<std::string, double> lr_scale;  // HF name -> multiplier (trained parameters only)
  int64_t trained_params = 0, frozen_params = 0;
  // (selector, model folder): init_from with each source resolved; selectors the family has nothing
  // for (fuyu's "vision") are left out and listed in `init_skipped`.
  std::vector<std::pair<std::string, std::string>> init_from;
  std::vector<std::string> init_skipped;
};

// The plan of `stage` for `vlm`'s family. A ConfigError at the stage key's file:line when a glob
// picks no parameter, when the stage would freeze every parameter the family has, or an init_from
// source is not a kept model.
StagePlan plan_stage(Vlm& vlm, const Stage& stage);

// Appends `item` to a ", "-separated list (the stage records' text columns).
void append_listed(std::string& list, const std::string& item, const char* separator = ", ");

// A kept model's folder from an init_from value: the folder itself, or "FILE.h5:RUN_ID" for the model
// a run of another results file kept (results/x.h5:llava-s0 -> results/x/models/llava-s0).
std::string resolve_model_source(const std::string& source);

// Copies the plan's init_from parameters into the model (architectures/transfer.h); a missing
// counterpart or a shape that differs is a ConfigError at the key's file:line.
void apply_init(Vlm& vlm, const Stage& stage, const StagePlan& plan);

}  // namespace vlm::exp
