// Each family starts from the weights its reference would draw: tests/data/init/hf_init_stats.json
// holds, for one config per family, every parameter's element count, mean and standard deviation
// as transformers 5.17 initialises it (tests/parity/make_init_stats.py). The draws differ; the
// distributions must agree within sampling error. The configs set non-default initializer ranges
// and factors, so a key that is ignored, or read from the wrong sub-config, shows.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "architectures/registry.h"
#include "tests/architectures/fixtures.h"

namespace vlm {
namespace {

// Our names and transformers 5.17's differ only by "model." / "language_model." wrappers.
std::string canonical(const std::string& name) {
  std::stringstream in(name);
  std::string part, out;
  while (std::getline(in, part, '.')) {
    if (part == "model" || part == "language_model") continue;
    out += out.empty() ? part : "." + part;
  }
  return out;
}

struct Stats {
  int64_t n = 0;
  double mean = 0, std = 0;
};

Stats stats_of(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  Stats s{static_cast<int64_t>(v.size()), 0, 0};
  for (const float x : v) s.mean += x;
  s.mean /= static_cast<double>(s.n);
  for (const float x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(s.n));
  return s;
}

const nlohmann::json& hf_stats() {
  static const nlohmann::json j = [] {
    std::ifstream f(testing::test_data() / "init" / "hf_init_stats.json");
    REQUIRE(f.good());
    return nlohmann::json::parse(f);
  }();
  return j;
}

void check_family(const std::string& family) {
  const nlohmann::json& fam = hf_stats().at("families").at(family);
  std::map<std::string, Stats> hf;
  for (const auto& [name, v] : fam.at("params").items())
    hf[canonical(name)] = Stats{v.at(0).get<int64_t>(), v.at(1).get<double>(), v.at(2).get<double>()};

  Rng rng(1);
  const auto model = make_architecture(io::HfConfig(fam.at("config"), family), rng);
  std::size_t matched = 0;
  for (const auto& [name, t] : named_parameters(*model)) {
    INFO(family << " " << name);
    const auto it = hf.find(canonical(name));
    REQUIRE(it != hf.end());
    ++matched;
    const Stats& ref = it->second;
    const Stats ours = stats_of(t);
    REQUIRE(ours.n == ref.n);
    if (ref.std == 0.0) {  // a constant: norms' ones, zero biases, zero gates
      CHECK(ours.std == 0.0);
      CHECK(ours.mean == Approx(ref.mean).margin(1e-12));
      continue;
    }
    // Two independent estimates of a normal's std each have sd sigma/sqrt(2n); of its mean,
    // sigma/sqrt(n). Five standard errors of the difference.
    const double n = static_cast<double>(ref.n);
    CHECK(std::abs(ours.std - ref.std) <= 5.0 * ref.std / std::sqrt(n));
    CHECK(std::abs(ours.mean - ref.mean) <= 5.0 * ref.std * std::sqrt(2.0 / n));
  }
  CHECK(matched == hf.size());  // every HF parameter exists here
}

TEST_CASE("init: llava's CLIP tower draws as CLIPPreTrainedModel does, the LM and projector from text_config",
          "[init]") {
  check_family("llava");
}

TEST_CASE("init: IDEFICS draws everything from the top-level initializer_range, its class token from N(0, 1)",
          "[init]") {
  check_family("flamingo");
}

TEST_CASE("init: fuyu's Persimmon LM from text_config, vision_embed_tokens from the top level", "[init]") {
  check_family("fuyu");
}

TEST_CASE("init: qwen2vl as Qwen2VLPreTrainedModel", "[init]") { check_family("qwen2vl"); }

}  // namespace
}  // namespace vlm
