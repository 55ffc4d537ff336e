#include "experiments/stages.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "architectures/transfer.h"
#include "experiments/checkpoint.h"

namespace vlm::exp {

namespace {

std::string at(const Stage& stage, const std::string& key) {
  const auto it = stage.where.find(key);
  return it != stage.where.end() ? it->second : stage.where.at("stage");
}

// Token embeddings and output heads are indexed by the vocabulary: copied from a model whose words
// sit at other ids they would read every token as another one, with shapes that still agree.
bool indexed_by_token(const std::string& name) {
  return name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos;
}

void check_vocabulary(const Vlm& vlm, const std::vector<std::string>& names, const std::string& dir) {
  if (std::none_of(names.begin(), names.end(), indexed_by_token)) return;
  // Not a model vlmlab kept (an HF folder): its words are not on record, only its shapes are checked.
  if (!std::filesystem::is_regular_file(std::filesystem::path(dir) / "vlmlab.json")) return;
  const std::vector<std::string> words = kept_vocabulary(dir);
  const std::string diff = vocabulary_difference(words, vlm.vocab(), false);
  if (!diff.empty())
    throw ConfigError("the token embeddings of " + dir + " belong to another vocabulary (" +
                      std::to_string(words.size()) + " words there, " + std::to_string(vlm.vocab().size()) +
                      " here; the first difference at " + diff +
                      "; a run's vocabulary is its [task]'s words, then the words its stages' tasks add)");
}

}  // namespace

void append_listed(std::string& list, const std::string& item, const char* separator) {
  if (!list.empty()) list += separator;
  list += item;
}

std::string resolve_model_source(const std::string& source) {
  const std::size_t colon = source.rfind(':');
  if (colon != std::string::npos && colon >= 3 && source.compare(colon - 3, 3, ".h5") == 0) {
    const std::string file = source.substr(0, colon), run = source.substr(colon + 1);
    if (run.empty()) throw ConfigError("\"" + source + "\" names no run after the ':'");
    const std::string dir = model_dir(file, run);
    if (!std::filesystem::is_directory(dir))
      throw ConfigError("no model kept for run \"" + run + "\" of " + file + " (looked for " + dir +
                        "; a run keeps its model once it completes)");
    return dir;
  }
  if (!std::filesystem::is_directory(source))
    throw ConfigError("\"" + source + "\" is neither a kept model's folder nor FILE.h5:RUN_ID");
  return source;
}

StagePlan plan_stage(Vlm& vlm, const Stage& stage) {
  StagePlan plan;
  Architecture& arch = vlm.model();
  const std::string family = vlm.family();
  const auto pick = [&](const std::string& key, const std::string& selector) {
    std::vector<std::string> names = select_parameters(arch, selector);
    if (names.empty() && !is_component(selector))
      throw ConfigError(at(stage, key) + ": \"" + selector + "\" matches no parameter of " + family +
                        " (globs match HF names such as " + named_parameters(arch).front().first +
                        "; `vlmlab check --params` lists them; or use vision, connector, lm)");
    return names;
  };
  std::set<std::string> trained;
  int64_t total = 0;
  const auto all = named_parameters(arch);
  if (!stage.trains.empty()) {
    for (const std::string& sel : stage.trains)
      for (std::string& n : pick("train", sel)) trained.insert(std::move(n));
    if (trained.empty()) {
      plan.skipped = true;
      std::string parts;
      for (const std::string& sel : stage.trains) append_listed(parts, sel);
      plan.reason = family + " has no parameters in " + parts;
    }
  } else {
    std::set<std::string> frozen;
    for (const std::string& sel : stage.freezes)
      for (std::string& n : pick("freeze", sel)) frozen.insert(std::move(n));
    for (const auto& [name, t] : all)
      if (!frozen.count(name)) trained.insert(name);
    if (trained.empty())
      throw ConfigError(at(stage, "freeze") + ": freezes every parameter of " + family + "; nothing would train");
  }
  for (const auto& [name, t] : all) {
    total += t.numel();
    if (trained.count(name)) plan.trained_params += t.numel();
    else plan.frozen.push_back(name);
  }
  plan.frozen_params = total - plan.trained_params;
  for (const auto& [sel, scale] : stage.lr_scale)
    for (const std::string& n : pick("lr_scale." + sel, sel))
      if (trained.count(n)) plan.lr_scale[n] = scale;
  for (const auto& [sel, source] : stage.init_from) {
    if (is_component(sel) && select_parameters(arch, sel).empty()) {
      plan.init_skipped.push_back(sel);
      continue;
    }
    const std::vector<std::string> names = pick("init_from." + sel, sel);
    try {
      plan.init_from.emplace_back(sel, resolve_model_source(source));
      check_vocabulary(vlm, names, plan.init_from.back().second);
    } catch (const ConfigError& e) {
      throw ConfigError(at(stage, "init_from." + sel) + ": " + e.what());
    }
  }
  return plan;
}

void apply_init(Vlm& vlm, const Stage& stage, const StagePlan& plan) {
  for (const auto& [sel, dir] : plan.init_from) init_from(vlm.model(), sel, dir, at(stage, "init_from." + sel));
}

}  // namespace vlm::exp
