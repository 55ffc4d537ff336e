// Every fixture in tests/data/parity through the same path as `vlmlab parity`, plus what holds for
// every family: the registry is complete, and save -> load gives identical logits.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "architectures/parity.h"
#include "lib/core/random.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> fixtures() {
  const char* root = std::getenv("VLM_TEST_DATA");
  const fs::path dir = fs::path(root ? root : "tests/data") / "parity";
  std::vector<fs::path> out;
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (fs::exists(e.path() / "io.safetensors")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("the registry names each family once with its HF model_type", "[arch]") {
  std::vector<std::string> names, types;
  for (const auto& f : vlm::families()) {
    names.emplace_back(f.name);
    types.emplace_back(f.hf_model_type);
  }
  CHECK(names == std::vector<std::string>{"llava", "flamingo", "fuyu", "qwen2vl"});
  CHECK(types == std::vector<std::string>{"llava", "idefics", "fuyu", "qwen2_vl"});
  const vlm::io::HfConfig bad(nlohmann::json{{"model_type", "blip"}}, "config.json");
  vlm::Rng rng(0);
  CHECK_THROWS_WITH(vlm::make_architecture(bad, rng),
                    Catch::Contains("config.json: model_type: \"blip\" is not a family"));
}

TEST_CASE("every HF fixture matches transformers stage by stage", "[arch][parity]") {
  const auto dirs = fixtures();
  REQUIRE(dirs.size() >= 9);
  for (const auto& dir : dirs) {
    DYNAMIC_SECTION(dir.filename().string()) {
      const vlm::ParityResult r = vlm::run_parity(dir.string());
      for (const auto& s : r.stages) {
        INFO(dir.filename().string() << " " << s.name << ": max |diff| " << s.max_abs_diff << ", "
                                     << s.mismatches << " mismatches " << s.note);
        CHECK(s.pass);
      }
      CHECK(r.pass());
    }
  }
}

TEST_CASE("save -> load gives identical logits and the same files", "[arch][io]") {
  for (const auto& dir : fixtures()) {
    DYNAMIC_SECTION(dir.filename().string()) {
      auto a = vlm::load_pretrained(dir.string());
      const fs::path out = fs::temp_directory_path() / ("vlm_saved_" + dir.filename().string());
      vlm::save_pretrained(*a, out.string());
      auto b = vlm::load_pretrained(out.string());
      const auto io = vlm::io::read_safetensors((dir / "io.safetensors").string());
      const vlm::Inputs in = vlm::Inputs::from_safetensors(io);
      vlm::NoGradGuard no_grad;
      CHECK(a->forward(in).logits.to_vector() == b->forward(in).logits.to_vector());
      // The saved weights hold exactly the reference tensors (under our names).
      const auto ref = vlm::io::read_safetensors((dir / "model.safetensors").string());
      const auto saved = vlm::io::read_safetensors((out / "model.safetensors").string());
      CHECK(saved.tensors.size() == ref.tensors.size());
      fs::remove_all(out);
    }
  }
}

TEST_CASE("models vlmlab trained and kept open in transformers with the same logits and greedy tokens",
          "[arch][parity][trained]") {
  // tests/data/trained: kept models of tests/parity/trained_fixtures.toml, with transformers' outputs
  // added by tests/parity/make_trained_fixtures.py (tests/parity/README.md).
  const char* root = std::getenv("VLM_TEST_DATA");
  const fs::path dir = fs::path(root ? root : "tests/data") / "trained";
  std::vector<std::string> families;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!fs::exists(e.path() / "io.safetensors")) continue;
    INFO(e.path().filename().string());
    const auto io = vlm::io::read_safetensors((e.path() / "io.safetensors").string());
    // Made by transformers (the script records its version), not by vlmlab itself.
    REQUIRE(io.metadata.count("transformers_version") == 1);
    CHECK(io.metadata.at("hf_class").find("For") != std::string::npos);
    REQUIRE(io.contains("vlmlab_logits"));
    const vlm::ParityResult r = vlm::run_parity(e.path().string());
    for (const auto& s : r.stages) {
      INFO(s.name << ": max |diff| " << s.max_abs_diff << ", " << s.mismatches << " mismatches " << s.note);
      CHECK(s.pass);
    }
    CHECK(r.pass());
    families.push_back(r.family);
  }
  std::sort(families.begin(), families.end());
  CHECK(families == std::vector<std::string>{"flamingo", "fuyu", "llava", "qwen2vl"});
}
