#include "lib/io/hf_config.h"

#include <cmath>
#include <fstream>

namespace vlm::io {

HfConfig::HfConfig(nlohmann::json j, std::string source, std::string path)
    : j_(std::move(j)), source_(std::move(source)), path_(std::move(path)) {
  if (j_.is_null()) j_ = nlohmann::json::object();
  VLM_CHECK(j_.is_object(), source_ << ": " << (path_.empty() ? "the config" : path_) << " must be a JSON object");
}

HfConfig HfConfig::load(const std::string& file) {
  std::ifstream f(file);
  if (!f) throw ConfigError(file + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(file + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw ConfigError(file + ": expected a JSON object");
  return HfConfig(std::move(j), file);
}

std::string HfConfig::key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

void HfConfig::fail(const std::string& key, const std::string& what) const {
  throw ConfigError(source_ + ": " + key_path(key) + ": " + what);
}

const nlohmann::json* HfConfig::find(const std::string& key) const {
  auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

bool HfConfig::has(const std::string& key) const { return find(key) != nullptr; }

HfConfig HfConfig::sub(const std::string& key) const {
  const nlohmann::json* v = find(key);
  if (v && !v->is_object()) fail(key, "expected an object, got " + v->dump());
  return HfConfig(v ? *v : nlohmann::json::object(), source_, key_path(key));
}

int64_t HfConfig::get_int(const std::string& key, int64_t fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::floor(d) == d) return static_cast<int64_t>(d);
  }
  fail(key, "expected an integer, got " + v->dump());
}

int64_t HfConfig::require_int(const std::string& key) const {
  if (!has(key)) fail(key, "missing (required)");
  return get_int(key, 0);
}

double HfConfig::get_double(const std::string& key, double fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_number()) fail(key, "expected a number, got " + v->dump());
  return v->get<double>();
}

bool HfConfig::get_bool(const std::string& key, bool fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(key, "expected true or false, got " + v->dump());
  return v->get<bool>();
}

std::string HfConfig::get_string(const std::string& key, const std::string& fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(key, "expected a string, got " + v->dump());
  return v->get<std::string>();
}

std::vector<int64_t> HfConfig::get_int_list(const std::string& key, const std::vector<int64_t>& fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (v->is_number_integer()) return {v->get<int64_t>()};
  if (!v->is_array()) fail(key, "expected an integer or a list of integers, got " + v->dump());
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer()) fail(key, "expected a list of integers, got " + v->dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace vlm::io
