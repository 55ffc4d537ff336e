// Typed reading of an HF config.json. Every error names the file and the key path
// (e.g. "config.json: text_config.hidden_act: ..."), so an unsupported value is never silently
// ignored.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/core/check.h"

namespace vlm::io {

using vlm::ConfigError;

class HfConfig {
 public:
  HfConfig(nlohmann::json j, std::string source, std::string path = "");
  static HfConfig load(const std::string& file);

  bool has(const std::string& key) const;  // present and not null
  // A nested object (e.g. "text_config"); absent or null gives an empty object with the same source.
  HfConfig sub(const std::string& key) const;

  int64_t get_int(const std::string& key, int64_t fallback) const;
  int64_t require_int(const std::string& key) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback) const;

  // "config.json: text_config.rope_scaling: <what>" as a ConfigError.
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  std::string key_path(const std::string& key) const;
  const nlohmann::json& json() const { return j_; }
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json* find(const std::string& key) const;
  nlohmann::json j_;
  std::string source_, path_;
};

}  // namespace vlm::io
