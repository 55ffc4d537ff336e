// Qwen2-VL beyond the generic fixture parity (test_parity.cpp): the 5.17 M-RoPE index on hand-worked
// examples, batch vs one-by-one, cached vs uncached generation (also with left padding), config
// errors naming their key, and the weight-name layouts transformers accepts.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "architectures/qwen2vl/rope_index.h"
#include "lib/core/random.h"
#include "tests/architectures/fixtures.h"

namespace fs = std::filesystem;
using vlm::qwen2vl::Grid;

using vlm::testing::fixture;
using vlm::testing::fixture_inputs;
using vlm::testing::max_abs_diff;

namespace {

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

// Rows [begin, end) of an int tensor [N, C] (or of a [B, T] tensor: one sample).
std::vector<int64_t> int_rows(const vlm::Inputs& in, const std::string& name, int64_t begin, int64_t end) {
  const vlm::Shape s = in.shape(name);
  const std::vector<int64_t> v = in.ints(name);
  return {v.begin() + begin * s[1], v.begin() + end * s[1]};
}

vlm::Tensor float_rows(const vlm::Inputs& in, const std::string& name, int64_t begin, int64_t end) {
  const vlm::Tensor t = in.floats(name);
  const int64_t C = t.dim(1);
  return vlm::Tensor::from({end - begin, C}, std::vector<float>(t.data() + begin * C, t.data() + end * C));
}

}  // namespace

TEST_CASE("qwen2vl get_rope_index: text, image, text, video, text as transformers 5.17", "[qwen2vl]") {
  // 3 text | image grid (1, 4, 6), merge 2 -> 1×2×3 = 6 tokens | 2 text | video grid (2, 2, 4) ->
  // 2×1×2 = 4 tokens | 2 text.
  const std::vector<int64_t> types = {0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 2, 2, 2, 2, 0, 0};
  const auto T = static_cast<int64_t>(types.size());
  const auto r = vlm::qwen2vl::get_rope_index(types, 1, T, {Grid{1, 4, 6}}, {Grid{2, 2, 4}}, {}, 2);
  // Text 0..2; the image starts at 3 and spans (t 3, h 3..4, w 3..5), then cur = 3 + max(2, 3) = 6;
  // text 6, 7; the video starts at 8: t 8..9, h 8, w 8..9 in (t, h, w) order, then cur = 8 + max(1, 2)
  // = 10; text 10, 11.
  const std::vector<int64_t> t = {0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7, 8, 8, 9, 9, 10, 11};
  const std::vector<int64_t> h = {0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7, 8, 8, 8, 8, 10, 11};
  const std::vector<int64_t> w = {0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11};
  std::vector<int64_t> expected = t;
  expected.insert(expected.end(), h.begin(), h.end());
  expected.insert(expected.end(), w.begin(), w.end());
  CHECK(r.position_ids == expected);
  CHECK(r.next_position == std::vector<int64_t>{12});
  CHECK(r.rope_deltas == std::vector<int64_t>{12 - 17});
}

TEST_CASE("qwen2vl get_rope_index: a long video advances by its spatial extent only", "[qwen2vl]") {
  // 1 text | video (3, 2, 2) -> 3 tokens of one merged patch each | 1 text. The video takes t 1..3,
  // yet the text after it resumes at 1 + max(1, 1) = 2 (v4 would have said 4).
  const auto r = vlm::qwen2vl::get_rope_index({0, 2, 2, 2, 0}, 1, 5, {}, {Grid{3, 2, 2}}, {}, 2);
  CHECK(r.position_ids == std::vector<int64_t>{0, 1, 2, 3, 2, /*h*/ 0, 1, 1, 1, 2, /*w*/ 0, 1, 1, 1, 2});
  CHECK(r.next_position == std::vector<int64_t>{4});
}

TEST_CASE("qwen2vl get_rope_index: grids run across the batch, padding is skipped", "[qwen2vl]") {
  // Row 0: 2 text | image grid[0] (1, 2, 2) -> 1 token | 3 text.
  // Row 1, left-padded by 1: 1 text | image grid[1] (1, 4, 4) -> 2×2 tokens.
  const std::vector<int64_t> types = {0, 0, 1, 0, 0, 0, /**/ 0, 0, 1, 1, 1, 1};
  const std::vector<int64_t> mask = {1, 1, 1, 1, 1, 1, /**/ 0, 1, 1, 1, 1, 1};
  const auto r = vlm::qwen2vl::get_rope_index(types, 2, 6, {Grid{1, 2, 2}, Grid{1, 4, 4}}, {}, mask, 2);
  const std::vector<int64_t> expected = {
      0, 1, 2, 3, 4, 5, /**/ 0, 0, 1, 1, 1, 1,  // t
      0, 1, 2, 3, 4, 5, /**/ 0, 0, 1, 1, 2, 2,  // h
      0, 1, 2, 3, 4, 5, /**/ 0, 0, 1, 2, 1, 2,  // w
  };
  CHECK(r.position_ids == expected);
  CHECK(r.next_position == std::vector<int64_t>{6, 3});
  CHECK(r.rope_deltas == std::vector<int64_t>{0, 3 - 5});
  // A run without a grid left, or of the wrong length, is an error.
  CHECK_THROWS_WITH(vlm::qwen2vl::get_rope_index(types, 2, 6, {Grid{1, 2, 2}}, {}, mask, 2),
                    Catch::Contains("more image runs than image_grid_thw rows"));
  CHECK_THROWS_WITH(vlm::qwen2vl::get_rope_index(types, 2, 6, {Grid{1, 2, 2}, Grid{1, 2, 4}}, {}, mask, 2),
                    Catch::Contains("gives 2"));
}

TEST_CASE("qwen2vl: a batch gives the logits of its samples run one by one", "[qwen2vl]") {
  auto arch = vlm::load_pretrained(fixture("qwen2vl_video_batch2").string());
  const vlm::Inputs in = fixture_inputs("qwen2vl_video_batch2");
  // Sample 0: the video (grid 3×2×2, all 12 video rows) and image 0 (1×4×4: pixel rows 0..16).
  // Sample 1: images 1 (1×2×6: rows 16..28) and 2 (1×4×2: rows 28..36).
  REQUIRE(in.ints("image_grid_thw") == std::vector<int64_t>{1, 4, 4, 1, 2, 6, 1, 4, 2});
  const int64_t T = in.shape("input_ids")[1];
  std::vector<vlm::Inputs> samples(2);
  for (int64_t b = 0; b < 2; ++b) {
    for (const char* name : {"input_ids", "attention_mask", "mm_token_type_ids"})
      samples[static_cast<std::size_t>(b)].set_ints(name, {1, T}, int_rows(in, name, b, b + 1));
  }
  samples[0].set_floats("pixel_values", float_rows(in, "pixel_values", 0, 16));
  samples[0].set_ints("image_grid_thw", {1, 3}, {1, 4, 4});
  samples[0].set_floats("pixel_values_videos", in.floats("pixel_values_videos"));
  samples[0].set_ints("video_grid_thw", {1, 3}, in.ints("video_grid_thw"));
  samples[1].set_floats("pixel_values", float_rows(in, "pixel_values", 16, 36));
  samples[1].set_ints("image_grid_thw", {2, 3}, {1, 2, 6, 1, 4, 2});

  vlm::NoGradGuard no_grad;
  const vlm::ForwardOutput batch = arch->forward(in);
  const int64_t per_sample = batch.logits.numel() / 2;
  for (int64_t b = 0; b < 2; ++b) {
    const vlm::ForwardOutput one = arch->forward(samples[static_cast<std::size_t>(b)]);
    REQUIRE(one.logits.numel() == per_sample);
    INFO("sample " << b);
    CHECK(max_abs_diff(one.logits.data(), batch.logits.data() + b * per_sample, per_sample) <= 1e-5);
    // Positions are per row: the sample's own [3, 1, T] equals the batch's row b.
    const std::vector<int64_t> ref = in.ints("position_ids");
    for (int64_t a = 0; a < 3; ++a)
      for (int64_t t = 0; t < T; ++t)
        CHECK(one.position_ids[static_cast<std::size_t>(a * T + t)] ==
              ref[static_cast<std::size_t>((a * 2 + b) * T + t)]);
  }
}

TEST_CASE("qwen2vl: generation with and without the KV cache agree", "[qwen2vl]") {
  for (const char* name : {"qwen2vl_tiny", "qwen2vl_video_3img", "qwen2vl_video_batch2"}) {
    DYNAMIC_SECTION(name) {
      auto arch = vlm::load_pretrained(fixture(name).string());
      const vlm::Inputs in = fixture_inputs(name);
      const auto cached = vlm::greedy_generate(*arch, in, 8, true);
      const auto uncached = vlm::greedy_generate(*arch, in, 8, false);
      CHECK(cached == uncached);
      // The fixture's 6 tokens (HF generate with the cache) are the first 6.
      const std::vector<int64_t> ref = in.ints("generated");
      for (std::size_t b = 0; b < cached.size(); ++b)
        CHECK(std::vector<int64_t>(cached[b].begin(), cached[b].begin() + 6) ==
              std::vector<int64_t>(ref.begin() + static_cast<std::ptrdiff_t>(6 * b),
                                   ref.begin() + static_cast<std::ptrdiff_t>(6 * b + 6)));
    }
  }
}

TEST_CASE("qwen2vl: left padding changes neither the real tokens' logits nor generation", "[qwen2vl]") {
  auto arch = vlm::load_pretrained(fixture("qwen2vl_tiny").string());
  const vlm::Inputs in = fixture_inputs("qwen2vl_tiny");
  const int64_t T = in.shape("input_ids")[1], pad = 3;
  vlm::Inputs padded = in;
  auto left_pad = [&](const std::string& n, int64_t fill) {
    std::vector<int64_t> v(static_cast<std::size_t>(pad), fill);
    const std::vector<int64_t> orig = in.ints(n);
    v.insert(v.end(), orig.begin(), orig.end());
    padded.set_ints(n, {1, T + pad}, v);
  };
  left_pad("input_ids", 0);
  left_pad("attention_mask", 0);
  left_pad("mm_token_type_ids", 0);

  vlm::NoGradGuard no_grad;
  const vlm::ForwardOutput a = arch->forward(in);
  const vlm::ForwardOutput b = arch->forward(padded);
  const int64_t V = a.logits.dim(2);
  CHECK(max_abs_diff(a.logits.data(), b.logits.data() + pad * V, T * V) <= 1e-5);
  for (int64_t axis = 0; axis < 3; ++axis)
    for (int64_t t = 0; t < T; ++t)
      CHECK(b.position_ids[static_cast<std::size_t>(axis * (T + pad) + pad + t)] ==
            a.position_ids[static_cast<std::size_t>(axis * T + t)]);
  const auto ref = vlm::greedy_generate(*arch, in, 6, true);
  CHECK(vlm::greedy_generate(*arch, padded, 6, true) == ref);
  CHECK(vlm::greedy_generate(*arch, padded, 6, false) == ref);
}

TEST_CASE("qwen2vl: unsupported configs are ConfigErrors naming the key", "[qwen2vl]") {
  const nlohmann::json base = read_json(fixture("qwen2vl_tiny") / "config.json");
  vlm::Rng rng(0);
  auto build = [&](const nlohmann::json& j) {
    const vlm::io::HfConfig cfg(j, "config.json");
    return vlm::make_architecture(cfg, rng);
  };
  CHECK_NOTHROW(build(base));

  nlohmann::json j = base;
  j["text_config"]["rope_parameters"]["mrope_section"] = {2, 1, 2};  // sums to 5, head_dim/2 = 4
  CHECK_THROWS_AS(build(j), vlm::io::ConfigError);
  CHECK_THROWS_WITH(build(j), Catch::Contains("config.json: text_config.rope_parameters.mrope_section:") &&
                                  Catch::Contains("head_dim/2 = 4"));

  j = base;
  j["text_config"]["rope_parameters"]["rope_type"] = "yarn";
  CHECK_THROWS_AS(build(j), vlm::io::ConfigError);
  CHECK_THROWS_WITH(build(j), Catch::Contains("config.json: text_config.rope_parameters.rope_type:") &&
                                  Catch::Contains("\"yarn\""));

  j = base;
  j["text_config"]["use_sliding_window"] = true;
  j["text_config"]["sliding_window"] = 16;
  CHECK_THROWS_AS(build(j), vlm::io::ConfigError);
  CHECK_THROWS_WITH(build(j), Catch::Contains("config.json: text_config.use_sliding_window:"));

  j = base;
  j["text_config"]["hidden_act"] = "swiglu_fancy";
  CHECK_THROWS_AS(build(j), vlm::io::ConfigError);
  CHECK_THROWS_WITH(build(j), Catch::Contains("config.json: text_config.hidden_act:"));

  // A pre-v5 flat config (LM keys at top level, rope_scaling) is read the same way.
  nlohmann::json flat = base["text_config"];
  flat.erase("rope_parameters");
  flat["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", {2, 1, 1}}};
  flat["rope_theta"] = 10000.0;
  for (const char* k : {"model_type", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id",
                        "vision_end_token_id", "tie_word_embeddings"})
    flat[k] = base[k];
  auto from_flat = build(flat);
  auto from_v5 = build(base);
  std::set<std::string> flat_names, v5_names;
  for (const auto& [n, t] : vlm::named_parameters(*from_flat)) flat_names.insert(n + vlm::shape_str(t.shape()));
  for (const auto& [n, t] : vlm::named_parameters(*from_v5)) v5_names.insert(n + vlm::shape_str(t.shape()));
  CHECK(flat_names == v5_names);
  flat["rope_scaling"]["type"] = "dynamic";
  CHECK_THROWS_WITH(build(flat), Catch::Contains("config.json: rope_scaling.type:"));
}

TEST_CASE("qwen2vl: weight names are the file's, and the v5 layout loads too", "[qwen2vl][io]") {
  const fs::path dir = fixture("qwen2vl_tiny");
  const auto st = vlm::io::read_safetensors((dir / "model.safetensors").string());
  auto arch = vlm::load_pretrained(dir.string());
  std::set<std::string> ours, file;
  for (const auto& [n, t] : vlm::named_parameters(*arch)) ours.insert(n);
  for (const auto& [n, t] : st.tensors) file.insert(n);
  CHECK(ours == file);

  // model.* -> model.language_model.*, visual.* -> model.visual.* (what 5.17 calls the module tree).
  std::map<std::string, vlm::io::RawTensor> renamed;
  for (const auto& [n, t] : st.tensors) {
    std::string m = n;
    if (n.rfind("model.", 0) == 0) m = "model.language_model." + n.substr(6);
    if (n.rfind("visual.", 0) == 0) m = "model.visual." + n.substr(7);
    renamed.emplace(m, t);
  }
  const fs::path out = fs::temp_directory_path() / "vlm_qwen2vl_v5_names";
  fs::create_directories(out);
  fs::copy_file(dir / "config.json", out / "config.json", fs::copy_options::overwrite_existing);
  vlm::io::write_safetensors((out / "model.safetensors").string(), renamed, {{"format", "pt"}});
  auto aliased = vlm::load_pretrained(out.string());
  fs::remove_all(out);

  const vlm::Inputs in = fixture_inputs("qwen2vl_tiny");
  vlm::NoGradGuard no_grad;
  CHECK(aliased->forward(in).logits.to_vector() == arch->forward(in).logits.to_vector());
}
