// The one table of families (registry.cpp): everything that lists, builds or names families (the
// CLI, experiments, bench, the report's check) reads it.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "architectures/architecture.h"
#include "architectures/model_sizes.h"
#include "architectures/processor.h"
#include "lib/core/random.h"
#include "lib/io/hf_config.h"

namespace vlm {

using ArchitectureFactory = std::unique_ptr<Architecture> (*)(const io::HfConfig& config, Rng& rng);
struct ModelPart;  // architectures/budget.h
// The parts a config describes, with their parameter counts (the memory budget), built from the
// parsed config alone: nothing is allocated.
using PartsFactory = std::vector<ModelPart> (*)(const io::HfConfig& config);

struct FamilyEntry {
  std::string_view name;           // vlmlab's family name
  std::string_view hf_model_type;  // config.json "model_type"
  std::string_view hf_class;       // transformers class, for messages
  ArchitectureFactory make;
  ProcessorFactory make_processor;
  ConfigBuilder build_config;
  PartsFactory parts;
  // Special tokens only this family uses (e.g. a query token), appended after the task's words
  // (SpecialTokens::own); the shared ids stay the same for every family.
  std::span<const std::string_view> own_tokens = {};
};

std::span<const FamilyEntry> families();  // the one table
// The entry of vlmlab's family `name`; a ConfigError listing the known ones (with a suggestion) otherwise.
const FamilyEntry& family_named(const std::string& name);
// The entry of config.json's model_type; a config error naming the key otherwise.
const FamilyEntry& family_for_config(const io::HfConfig& config);

// Builds the family named by config.json's model_type, with freshly initialised weights.
std::unique_ptr<Architecture> make_architecture(const io::HfConfig& config, Rng& rng);

}  // namespace vlm
