// What the family tests share: the HF parity fixtures (tests/data/parity, VLM_TEST_DATA) and the
// max |difference| between float buffers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "architectures/inputs.h"

namespace vlm::testing {

inline std::filesystem::path test_data() {
  const char* root = std::getenv("VLM_TEST_DATA");
  return std::filesystem::path(root ? root : "tests/data");
}

inline std::filesystem::path fixture(const std::string& name) { return test_data() / "parity" / name; }

inline Inputs fixture_inputs(const std::string& name) {
  return Inputs::from_safetensors(io::read_safetensors((fixture(name) / "io.safetensors").string()));
}

inline nlohmann::json fixture_config(const std::string& name) {
  return io::HfConfig::load((fixture(name) / "config.json").string()).json();
}

inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// Sizes must agree; a mismatch is a test failure, not a comparison of the common prefix.
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  return max_abs_diff(a.data(), b.data(), a.numel());
}

}  // namespace vlm::testing
