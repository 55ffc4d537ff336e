// `vlmlab parity DIR`: run a family on an HF fixture (config.json, model.safetensors,
// io.safetensors) and compare every stage the fixture holds.
#pragma once

#include <string>
#include <vector>

namespace vlm {

struct ParityStage {
  std::string name;
  bool exact = false;         // integer stages (positions, tokens) must match exactly
  double max_abs_diff = 0.0;  // float stages
  int64_t mismatches = 0;     // integer stages
  bool pass = false;
  std::string note;
};

struct ParityResult {
  std::string family;
  std::vector<ParityStage> stages;
  bool pass() const;
};

// Throws io::ConfigError for a config or folder vlmlab cannot run (including weights missing, extra or
// of the wrong shape, and reference tensors missing or of an impossible shape), vlm::Error otherwise.
ParityResult run_parity(const std::string& dir, double tolerance = 1e-4);

}  // namespace vlm
