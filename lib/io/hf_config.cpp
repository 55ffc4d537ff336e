#include "lib/io/hf_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

namespace vlm::io {

namespace {

// Messages show at most this many characters of a value or key from the file.
constexpr std::size_t kMaxShown = 200;

// (resize + append rather than substr + "...": GCC 12 -O3 misreads the latter as an overlapping copy.)
std::string cut(std::string s, std::size_t max_chars = kMaxShown) {
  if (s.size() > max_chars) {
    s.resize(max_chars);
    s.append(3, '.');
  }
  return s;
}

// Nesting depth of a JSON text, checked in one SAX pass before the DOM is built: nlohmann's parser
// is iterative, but copying or destroying a value recurses, so 200,000 nested arrays under any key
// would overflow the stack. Syntax errors are left to the real parse.
class DepthLimit : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit DepthLimit(int max_depth) : max_(max_depth) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
  bool too_deep() const { return too_deep_; }

 private:
  bool open() {
    if (++depth_ > max_) too_deep_ = true;
    return !too_deep_;  // stops the scan
  }
  bool close() {
    --depth_;
    return true;
  }
  int max_, depth_ = 0;
  bool too_deep_ = false;
};

// Integers narrow to int in the families (layers, heads, sizes): every one read must fit.
constexpr int64_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

// The integer a JSON number holds, if it is one in [kIntMin, kIntMax] (an integral float such as
// 4.0 counts); nullopt otherwise.
std::optional<int64_t> small_int(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(kIntMax)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (i < kIntMin || i > kIntMax) return std::nullopt;
    return i;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(std::floor(d) == d) || d < static_cast<double>(kIntMin) || d > static_cast<double>(kIntMax))
      return std::nullopt;
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// As text, [kIntMin, kIntMax] (written out: GCC 12 -O3 misreads the concatenation as an overlapping copy).
std::string int_range() { return "[-2147483648, 2147483647]"; }

}  // namespace

nlohmann::json parse_json_text(const std::string& text, const std::string& source, int max_depth) {
  // nlohmann treats a NUL byte as the end of the input, so "{...}\0anything" would parse; JSON
  // allows no raw NUL anywhere.
  if (const std::size_t nul = text.find('\0'); nul != std::string::npos)
    throw ConfigError(source + ": invalid JSON: a NUL byte at byte " + std::to_string(nul));
  DepthLimit depth(max_depth);
  nlohmann::json::sax_parse(text, &depth);
  if (depth.too_deep())
    throw ConfigError(source + ": invalid JSON: nests deeper than " + std::to_string(max_depth) +
                      " arrays and objects");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(source + ": invalid JSON: " + cut(e.what()));
  }
}

std::string short_dump(const nlohmann::json& v) { return cut(v.dump()); }

HfConfig::HfConfig(nlohmann::json j, std::string source, std::string path)
    : j_(std::move(j)), source_(std::move(source)), path_(std::move(path)) {
  if (j_.is_null()) j_ = nlohmann::json::object();
  VLM_CHECK(j_.is_object(), source_ << ": " << (path_.empty() ? "the config" : path_) << " must be a JSON object");
}

HfConfig HfConfig::load(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) throw ConfigError(file + ": is a directory, not a JSON file");
  std::ifstream f(file, std::ios::binary);
  if (!f) throw ConfigError(file + ": cannot open");
  std::ostringstream text;
  text << f.rdbuf();
  if (!f) throw ConfigError(file + ": cannot read");
  nlohmann::json j = parse_json_text(text.str(), file);
  if (!j.is_object()) throw ConfigError(file + ": expected a JSON object");
  return HfConfig(std::move(j), file);
}

std::string HfConfig::key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

void HfConfig::fail(const std::string& key, const std::string& what) const {
  // Each value a message quotes is cut where it is written; this bounds what a caller missed.
  throw ConfigError(source_ + ": " + cut(key_path(key)) + ": " + cut(what, 5 * kMaxShown));
}

const nlohmann::json* HfConfig::find(const std::string& key) const {
  auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

bool HfConfig::has(const std::string& key) const { return find(key) != nullptr; }

HfConfig HfConfig::sub(const std::string& key) const {
  const nlohmann::json* v = find(key);
  if (v && !v->is_object()) fail(key, "expected an object, got " + short_dump(*v));
  return HfConfig(v ? *v : nlohmann::json::object(), source_, key_path(key));
}

int64_t HfConfig::get_int(const std::string& key, int64_t fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (const std::optional<int64_t> i = small_int(*v)) return *i;
  fail(key, "expected an integer in " + int_range() + ", got " + short_dump(*v));
}

int64_t HfConfig::require_int(const std::string& key) const {
  if (!has(key)) fail(key, "missing (required)");
  return get_int(key, 0);
}

double HfConfig::get_double(const std::string& key, double fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_number()) fail(key, "expected a number, got " + short_dump(*v));
  return v->get<double>();
}

bool HfConfig::get_bool(const std::string& key, bool fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(key, "expected true or false, got " + short_dump(*v));
  return v->get<bool>();
}

std::string HfConfig::get_string(const std::string& key, const std::string& fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(key, "expected a string, got " + short_dump(*v));
  return v->get<std::string>();
}

std::vector<int64_t> HfConfig::get_int_list(const std::string& key, const std::vector<int64_t>& fallback) const {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  const std::string want = "expected an integer or a list of integers, each in " + int_range() + ", got ";
  if (v->is_number_integer()) {
    if (const std::optional<int64_t> i = small_int(*v)) return {*i};
    fail(key, want + short_dump(*v));
  }
  if (!v->is_array()) fail(key, want + short_dump(*v));
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    const std::optional<int64_t> i = e.is_number_integer() ? small_int(e) : std::nullopt;
    if (!i) fail(key, want + short_dump(*v));
    out.push_back(*i);
  }
  return out;
}

}  // namespace vlm::io
