#include "architectures/parity.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "architectures/generate.h"
#include "architectures/pretrained.h"

namespace vlm {

bool ParityResult::pass() const {
  if (stages.empty()) return false;
  for (const auto& s : stages)
    if (!s.pass) return false;
  return true;
}

namespace {

ParityStage compare_floats(const std::string& name, const Tensor& ours, const Tensor& ref, double tol) {
  ParityStage s{name, false, 0.0, 0, false, ""};
  if (ours.numel() != ref.numel()) {
    s.note = "shape " + shape_str(ours.shape()) + " vs reference " + shape_str(ref.shape());
    s.max_abs_diff = INFINITY;
    return s;
  }
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double d = std::abs(static_cast<double>(ours.data()[i]) - ref.data()[i]);
    if (!(d <= s.max_abs_diff)) s.max_abs_diff = std::isnan(d) ? INFINITY : d;
  }
  if (ours.shape() != ref.shape()) s.note = "same size, shape " + shape_str(ours.shape()) + " vs " + shape_str(ref.shape());
  s.pass = s.max_abs_diff <= tol;
  return s;
}

ParityStage compare_ints(const std::string& name, const std::vector<int64_t>& ours, const std::vector<int64_t>& ref) {
  ParityStage s{name, true, 0.0, 0, false, ""};
  if (ours.size() != ref.size()) {
    s.note = std::to_string(ours.size()) + " values vs reference " + std::to_string(ref.size());
    s.mismatches = static_cast<int64_t>(std::max(ours.size(), ref.size()));
    return s;
  }
  for (std::size_t i = 0; i < ref.size(); ++i) s.mismatches += ours[i] != ref[i];
  s.pass = s.mismatches == 0;
  if (!s.pass) {  // show both, so a mismatch can be read at a glance
    std::ostringstream os;
    auto list = [&os](const char* label, const std::vector<int64_t>& v) {
      os << label << " [";
      for (std::size_t i = 0; i < std::min<std::size_t>(v.size(), 16); ++i) os << (i ? " " : "") << v[i];
      os << (v.size() > 16 ? " ...]" : "]");
    };
    list("ours", ours);
    list(" reference", ref);
    s.note = os.str();
  }
  return s;
}

// A fixture folder vlmlab cannot compare (a tensor missing, extra or of the wrong shape) is for the
// user to fix: a ConfigError (exit 2), unlike a comparison that fails (exit 1).
[[noreturn]] void structural(const std::string& what) { throw ConfigError(what); }

// The longest generation a fixture may ask for: HF fixtures generate a handful of tokens.
constexpr int64_t kMaxParityNewTokens = 4096;

}  // namespace

ParityResult run_parity(const std::string& dir, double tolerance) {
  std::unique_ptr<Architecture> arch;
  try {
    arch = load_pretrained(dir);
  } catch (const ConfigError&) {
    throw;
  } catch (const io::SafetensorsError&) {
    throw;
  } catch (const Error& e) {  // load_module: a weight missing, unexpected or of the wrong shape
    structural(e.what());
  }
  const io::Safetensors io = io::read_safetensors(dir + "/io.safetensors");
  for (const char* required : {"input_ids", "logits"})
    if (!io.contains(required)) structural(io.source + ": reference tensor \"" + std::string(required) + "\" is missing");
  const Inputs in = Inputs::from_safetensors(io);
  ParityResult r;
  r.family = std::string(arch->family());
  NoGradGuard no_grad;
  const ForwardOutput out = arch->forward(in);
  for (const auto& [name, t] : out.stages)
    if (io.contains(name)) r.stages.push_back(compare_floats(name, t, in.floats(name), tolerance));
  if (io.contains("position_ids") && !out.position_ids.empty())
    r.stages.push_back(compare_ints("position_ids", out.position_ids, in.ints("position_ids")));
  r.stages.push_back(compare_floats("logits", out.logits, in.floats("logits"), tolerance));
  if (io.contains("generated")) {
    const Shape gs = in.shape("generated");
    const Shape ids = in.shape("input_ids");
    // One row per prompt and a length that fits an int: [0, 2^31] once wrapped negative and compared
    // nothing, and a huge length would generate for hours.
    if (gs.size() != 2 || ids.empty() || gs[0] != ids[0] || gs[1] < 1 || gs[1] > kMaxParityNewTokens)
      structural(io.source + ": reference tensor \"generated\" has shape " + shape_str(gs) +
                 "; expected [rows of input_ids (" + (ids.empty() ? std::string("?") : std::to_string(ids[0])) +
                 "), new tokens in [1, " + std::to_string(kMaxParityNewTokens) + "]]");
    // The fixtures come from HF generate(max_new_tokens=n, min_new_tokens=n): EOS is masked for all
    // n steps (tests/parity/make_fixtures.py).
    GenerateOptions opt;
    opt.max_new_tokens = opt.min_new_tokens = static_cast<int>(gs[1]);
    const std::string gen_path = dir + "/generation_config.json";
    const io::HfConfig gen = std::filesystem::exists(gen_path)
                                 ? io::HfConfig::load(gen_path)
                                 : io::HfConfig(generation_config(arch->config()), dir + " (model config)");
    opt.eos_token_ids = gen.get_int_list("eos_token_id", {});
    opt.pad_token_id = gen.get_int("pad_token_id", 0);
    for (bool cache : {true, false}) {
      opt.use_cache = cache;
      std::vector<int64_t> flat;
      for (const auto& row : greedy_generate(*arch, in, opt)) flat.insert(flat.end(), row.begin(), row.end());
      r.stages.push_back(compare_ints(cache ? "generated" : "generated (no cache)", flat, in.ints("generated")));
    }
  }
  return r;
}

}  // namespace vlm
