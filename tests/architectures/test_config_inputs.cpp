// config.json as a careless or hostile user writes it (issue 26): every bad file is a ConfigError
// naming the key, found before a large allocation, with long values cut in the message.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>

#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "architectures/budget.h"
#include "architectures/lm_side.h"
#include "architectures/parity.h"
#include "fixtures.h"
#include "lib/core/random.h"

namespace fs = std::filesystem;
using Catch::Contains;
using Catch::StartsWith;
using vlm::ConfigError;
using vlm::io::HfConfig;

namespace {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("vlm_cfg_test_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The error make_architecture gives for a config, or "" when it builds.
std::string build_error(const nlohmann::json& j) {
  vlm::Rng rng(0);
  try {
    vlm::make_architecture(HfConfig(j, "config.json"), rng);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config.json nesting is bounded before the file is parsed", "[arch][config]") {
  TempDir dir;
  // 200,000 nested arrays under a key nothing reads: copying the value recursed off the stack.
  const std::string path = dir.file("config.json");
  write_text(path, "{\"model_type\": \"llava\", \"unused\": " + std::string(200'000, '[') +
                       std::string(200'000, ']') + "}");
  try {
    const HfConfig cfg = HfConfig::load(path);
    const nlohmann::json copy = cfg.json();  // what the families do with their config
    FAIL("a 200,000-deep config.json loaded");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Contains(path + ": invalid JSON: nests deeper than 512 arrays and objects"));
  }
  // The limit itself is allowed.
  write_text(path, "{\"x\": " + std::string(511, '[') + std::string(511, ']') + "}");
  CHECK(HfConfig::load(path).has("x"));
  write_text(path, "{\"x\": " + std::string(512, '[') + std::string(512, ']') + "}");
  CHECK_THROWS_WITH(HfConfig::load(path), Contains("nests deeper than 512"));
}

TEST_CASE("config.json bytes after a NUL, directories and syntax errors are refused", "[arch][config]") {
  TempDir dir;
  const std::string path = dir.file("config.json");
  write_text(path, std::string("{\"model_type\": \"llava\"}\0{\"x\": 1}", 33));
  CHECK_THROWS_WITH(HfConfig::load(path), path + ": invalid JSON: a NUL byte at byte 23");
  CHECK_THROWS_WITH(HfConfig::load(dir.file("")), Contains("is a directory"));
  write_text(path, "{\"a\": " + std::string(100'000, '1') + "x}");
  try {
    HfConfig::load(path);
    FAIL("bad JSON loaded");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Contains("invalid JSON"));
    CHECK(std::string(e.what()).size() < 1000);
  }
}

TEST_CASE("config.json integers are range-checked before narrowing", "[arch][config]") {
  const nlohmann::json base = vlm::testing::fixture_config("llava_tiny");
  REQUIRE(build_error(base).empty());
  // 2^32 + 2 layers used to become 2 layers, and parity said OK.
  for (const nlohmann::json& bad : {nlohmann::json(4294967298LL), nlohmann::json(18446744073709551615ULL),
                                    nlohmann::json(1e30), nlohmann::json(-4294967296LL), nlohmann::json(2.5)}) {
    nlohmann::json j = base;
    j["text_config"]["num_hidden_layers"] = bad;
    CHECK_THAT(build_error(j), Contains("config.json: text_config.num_hidden_layers: expected an integer in "
                                        "[-2147483648, 2147483647], got " + bad.dump()));
  }
  nlohmann::json j = base;
  j["vision_feature_layer"] = {-1, 4294967295LL};
  CHECK_THAT(build_error(j), Contains("config.json: vision_feature_layer: expected an integer or a list of "
                                      "integers, each in [-2147483648, 2147483647], got [-1,4294967295]"));
  j["vision_feature_layer"] = 9223372036854775807LL;
  CHECK_THAT(build_error(j), Contains("vision_feature_layer: expected an integer"));
  // An integral float is still an integer.
  j = base;
  j["text_config"]["num_hidden_layers"] = 2.0;
  CHECK(build_error(j).empty());
}

TEST_CASE("config.json messages cut long values and keys", "[arch][config]") {
  const std::string huge(1'000'000, 'x');
  nlohmann::json j = vlm::testing::fixture_config("llava_tiny");
  j["text_config"]["hidden_act"] = nlohmann::json::array();
  for (int i = 0; i < 100'000; ++i) j["text_config"]["hidden_act"].push_back(i);
  std::string msg = build_error(j);
  CHECK_THAT(msg, Contains("text_config.hidden_act: expected a string, got [0,1,2,3") && Contains("..."));
  CHECK(msg.size() < 1000);

  msg = build_error({{"model_type", huge}});
  CHECK_THAT(msg, Contains("config.json: model_type: \"xxxx") && Contains("...\" is not a family"));
  CHECK(msg.size() < 1000);

  j = vlm::testing::fixture_config("llava_tiny");
  j["text_config"]["hidden_act"] = huge;
  msg = build_error(j);
  CHECK_THAT(msg, Contains("text_config.hidden_act"));
  CHECK(msg.size() < 2000);
}

TEST_CASE("parity's structural problems are ConfigErrors (exit 2), not failed comparisons", "[arch][parity]") {
  TempDir dir;
  const fs::path src = vlm::testing::fixture("llava_tiny");
  const fs::path fx = dir.file("fx");
  fs::copy(src, fx);
  const std::string weights = (fx / "model.safetensors").string(), io_path = (fx / "io.safetensors").string();
  const vlm::io::Safetensors good = vlm::io::read_safetensors(weights);
  const vlm::io::Safetensors good_io = vlm::io::read_safetensors(io_path);
  REQUIRE(vlm::run_parity(fx.string()).pass());
  const auto parity_error = [&] {
    try {
      vlm::run_parity(fx.string());
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };

  SECTION("a weight missing") {
    auto t = good.tensors;
    t.erase(t.begin());
    vlm::io::write_safetensors(weights, t);
    CHECK_THAT(parity_error(), Contains("missing tensor"));
  }
  SECTION("a weight the model does not have") {
    auto t = good.tensors;
    const std::vector<float> one = {1.0f};
    t.emplace("extra.weight", vlm::io::raw_f32({1}, one));
    vlm::io::write_safetensors(weights, t);
    CHECK_THAT(parity_error(), Contains("tensor(s) the model does not have: \"extra.weight\""));
  }
  SECTION("a weight of the wrong shape") {
    auto t = good.tensors;
    vlm::io::RawTensor& w = t.begin()->second;
    w.shape = {static_cast<int64_t>(w.bytes.size() / vlm::io::dtype_size(w.dtype))};
    vlm::io::write_safetensors(weights, t);
    CHECK_THAT(parity_error(), Contains("has shape") && Contains("the model expects"));
  }
  SECTION("reference logits missing") {
    auto t = good_io.tensors;
    t.erase("logits");
    vlm::io::write_safetensors(io_path, t);
    CHECK_THAT(parity_error(), Contains("reference tensor \"logits\" is missing"));
  }
  SECTION("a generation of [0, 2^31] tokens") {
    // Wrapped negative, generated nothing and compared nothing: parity passed.
    auto t = good_io.tensors;
    t["generated"] = vlm::io::raw_i64({0, int64_t{1} << 31}, {});
    vlm::io::write_safetensors(io_path, t);
    CHECK_THAT(parity_error(), Contains("reference tensor \"generated\" has shape [0, 2147483648]"));
    t["generated"] = vlm::io::raw_i64({1, 1'000'000}, std::vector<int64_t>(1'000'000, 0));
    vlm::io::write_safetensors(io_path, t);
    CHECK_THAT(parity_error(), Contains("new tokens in [1, 4096]"));
  }
}

TEST_CASE("config.json sizes are checked against a memory budget before anything is allocated", "[arch][config]") {
  struct Restore {
    ~Restore() { vlm::set_memory_budget(0); }
  } restore;
  vlm::set_memory_budget(int64_t{8} << 30);  // the same answer on any machine
  const auto start = std::chrono::steady_clock::now();
  // HF's defaults alone: 7B (llava), 9B (idefics, fuyu) and 72B (qwen2_vl, whose vision default
  // must be made consistent first) parameters.
  for (const nlohmann::json& j : {nlohmann::json{{"model_type", "llava"}}, nlohmann::json{{"model_type", "idefics"}},
                                  nlohmann::json{{"model_type", "fuyu"}},
                                  nlohmann::json{{"model_type", "qwen2_vl"}, {"vision_config", {{"hidden_size", 8192}}}}}) {
    INFO(j.dump());
    CHECK_THAT(build_error(j),
               Contains("(HF's default: the file does not set it) makes a model of") &&
                   Contains("more than the memory budget of 8.0 GiB"));
  }
  CHECK_THAT(build_error({{"model_type", "llava"}}),
             StartsWith("config.json: text_config.hidden_size: 4096 (HF's default: the file does not set it) makes "
                        "a model of 7.0"));
  nlohmann::json j = vlm::testing::fixture_config("llava_tiny");
  j["text_config"]["hidden_size"] = 1e9;
  CHECK_THAT(build_error(j), StartsWith("config.json: text_config.hidden_size: 1000000000 makes a model of"));
  j = vlm::testing::fixture_config("llava_tiny");
  j["vision_config"]["num_hidden_layers"] = 2000000000;
  j["vision_feature_layer"] = -1;
  CHECK_THAT(build_error(j), StartsWith("config.json: vision_config.num_hidden_layers: 2000000000 makes a model of") &&
                                 Contains("its vision tower alone has"));
  j = vlm::testing::fixture_config("fuyu_tiny");
  j["patch_size"] = 1000000;
  CHECK_THAT(build_error(j), StartsWith("config.json: patch_size: 1000000 makes a model of"));
  // Refused in well under a second: nothing was built.
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 5.0);
  // The fixtures themselves fit a small budget.
  vlm::set_memory_budget(int64_t{1} << 20);
  for (const char* fx : {"llava_tiny", "idefics_tiny", "fuyu_tiny", "qwen2vl_tiny"}) {
    INFO(fx);
    CHECK(build_error(vlm::testing::fixture_config(fx)).empty());
  }
}

TEST_CASE("qwen2vl refuses image grids that do not describe pixel_values before building positions", "[arch][config]") {
  auto arch = vlm::load_pretrained(vlm::testing::fixture("qwen2vl_tiny").string());
  vlm::Inputs in = vlm::testing::fixture_inputs("qwen2vl_tiny");
  REQUIRE(in.has("image_grid_thw"));
  const vlm::Shape gs = in.shape("image_grid_thw");
  vlm::NoGradGuard no_grad;
  const auto forward_error = [&] {
    try {
      arch->forward(in);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };
  REQUIRE(forward_error() == "no ConfigError");
  std::vector<int64_t> grid(static_cast<std::size_t>(gs[0] * 3), 1);
  grid[1] = grid[2] = int64_t{1} << 20;  // 2^40 positions
  in.set_ints("image_grid_thw", gs, grid);
  CHECK_THAT(forward_error(), Contains("qwen2vl: image_grid_thw describes") && Contains("patches but pixel_values has shape"));
  grid[1] = -1;
  in.set_ints("image_grid_thw", gs, grid);
  CHECK_THAT(forward_error(), Contains("each entry must be >= 1"));
}

// ---- RoPE settings: one reader, transformers' precedence, the same theta in every family ----

TEST_CASE("RoPE settings: rope_scaling wins over rope_parameters, the dict's theta over the flat one",
          "[config][rope]") {
  auto read = [](const nlohmann::json& j) {
    return vlm::read_rope(HfConfig(j, "config.json"), vlm::RopeRules("llava", 10000.0));
  };
  const nlohmann::json both = {{"rope_theta", 7.0},
                               {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 500.0}}},
                               {"rope_scaling", {{"rope_type", "default"}}}};
  // rope_scaling is the dict (rope_parameters is not read at all); it has no theta: the flat one.
  CHECK(read(both).theta == 7.0);
  CHECK(read(both).dict_key == "rope_scaling");
  nlohmann::json j = both;
  j["rope_scaling"]["rope_theta"] = 3.0;
  CHECK(read(j).theta == 3.0);
  j.erase("rope_theta");
  j["rope_scaling"].erase("rope_theta");
  CHECK(read(j).theta == 10000.0);  // neither: the model's default, not rope_parameters' 500
  j["rope_scaling"] = nlohmann::json::object();  // {} is falsy: `rope_scaling or rope_parameters`
  CHECK(read(j).theta == 500.0);
  CHECK(read(j).dict_key == "rope_parameters");
  j["rope_scaling"] = nullptr;
  CHECK(read(j).theta == 500.0);
  // Only the chosen dict's type counts: a linear rope_parameters under a default rope_scaling is unused.
  j = both;
  j["rope_parameters"]["rope_type"] = "linear";
  CHECK_NOTHROW(read(j));
  j["rope_scaling"]["type"] = "dynamic";  // the legacy key only where rope_type is absent
  CHECK_NOTHROW(read(j));
  j["rope_scaling"].erase("rope_type");
  CHECK_THROWS_WITH(read(j), Contains("config.json: rope_scaling.type: \"dynamic\" is not supported"));
  j = both;
  j["rope_scaling"] = "linear";
  CHECK_THROWS_WITH(read(j), Contains("config.json: rope_scaling: expected an object or null"));
  j = both;
  j["rope_scaling"]["rope_theta"] = 0.0;
  CHECK_THROWS_WITH(read(j), Contains("config.json: rope_scaling.rope_theta: must be positive"));
  // partial_rotary_factor: the dict's, else the flat one (unless the family passes no flat keys).
  vlm::RopeRules partial("fuyu", 10000.0);
  partial.default_partial_rotary_factor = 0.5;
  j = {{"partial_rotary_factor", 0.25}, {"rope_parameters", {{"rope_theta", 9.0}}}};
  CHECK(vlm::read_rope(HfConfig(j, "config.json"), partial).partial_rotary_factor == 0.25);
  partial.flat_keys = false;
  CHECK(vlm::read_rope(HfConfig(j, "config.json"), partial).partial_rotary_factor == 0.5);
}

TEST_CASE("RoPE settings: a config holding both rope keys gives every family the same theta", "[config][rope]") {
  vlm::NoGradGuard no_grad;
  vlm::ModelSizes sizes;
  sizes.text.hidden_size = sizes.vision.hidden_size = 32;
  sizes.vocab_size = 40;
  for (const vlm::FamilyEntry& f : vlm::families()) {
    INFO("family " << f.name);
    const nlohmann::json base = f.build_config(sizes, nlohmann::json::object());
    // The object holding the LM's keys: the top level (flamingo) or text_config.
    const bool top = base.contains("rope_theta") || base.contains("rope_parameters");
    auto with = [&](const std::optional<double>& scaling_theta, double parameters_theta) {
      nlohmann::json j = base;
      nlohmann::json& t = top ? j : j["text_config"];
      REQUIRE(t.is_object());
      nlohmann::json dict = t.contains("rope_parameters") ? t["rope_parameters"] : nlohmann::json{{"rope_type", "default"}};
      t["rope_theta"] = 500.0;
      t["rope_parameters"] = dict;
      t["rope_parameters"]["rope_theta"] = parameters_theta;
      if (scaling_theta) {
        t["rope_scaling"] = dict;
        t["rope_scaling"]["rope_theta"] = *scaling_theta;
      }
      return HfConfig(j, "config.json");
    };
    nlohmann::json options = nullptr;
    if (f.name == "fuyu") options = {{"size", {{"height", 75}, {"width", 75}}}};
    const HfConfig both = with(3.0, 500.0), scaled_only = with(std::nullopt, 3.0), other = with(std::nullopt, 500.0);
    const vlm::Inputs in = f.make_processor(both, options, sizes.tokens)
                               ->make_inputs({vlm::MultimodalSample{{10, vlm::kImageMarker, 11, 12, 13},
                                                                    {vlm::data::Image(75, 75, {200, 30, 90})}}});
    auto logits = [&](const HfConfig& cfg) {
      vlm::Rng rng(7);
      return vlm::make_architecture(cfg, rng)->forward(in).logits;
    };
    const vlm::Tensor a = logits(both), b = logits(scaled_only), c = logits(other);
    CHECK(vlm::testing::max_abs_diff(a, b) == 0.0);  // rope_scaling's theta 3, not rope_parameters' 500
    CHECK(vlm::testing::max_abs_diff(a, c) > 0.0);  // and theta matters to these logits
  }
}
