// Typed reading of an HF config.json. Every error names the file and the key path
// (e.g. "config.json: text_config.hidden_act: ..."), so an unsupported value is never silently
// ignored; values and keys in messages are cut at 200 characters. Integers must fit in int32 (the
// families narrow them to int), and nesting is bounded before the file is parsed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/core/check.h"

namespace vlm::io {

using vlm::ConfigError;

// Parses JSON text strictly: a NUL byte anywhere, or arrays and objects nested deeper than
// max_depth, is a ConfigError naming `source`, found before anything is built.
inline constexpr int kMaxJsonDepth = 512;
nlohmann::json parse_json_text(const std::string& text, const std::string& source, int max_depth = kMaxJsonDepth);
// v.dump() cut to 200 characters, for messages.
std::string short_dump(const nlohmann::json& v);

class HfConfig {
 public:
  HfConfig(nlohmann::json j, std::string source, std::string path = "");
  static HfConfig load(const std::string& file);

  bool has(const std::string& key) const;  // present and not null
  // A nested object (e.g. "text_config"); absent or null gives an empty object with the same source.
  HfConfig sub(const std::string& key) const;

  // An integer in [-2^31, 2^31 - 1] (an integral float such as 4.0 counts); anything else is an error.
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
