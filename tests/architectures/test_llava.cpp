// LLaVA beyond the generic fixture parity (test_parity.cpp): batching, padding, the KV cache,
// config errors, feature-layer forms, weight-name layouts, and the shared CLIP vision tower.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "lib/core/random.h"
#include "lib/nn/weights.h"
#include "lib/nn/clip_vision.h"
#include "lib/ops/ops.h"
#include "tests/architectures/fixtures.h"

namespace fs = std::filesystem;

using vlm::testing::fixture;
using vlm::testing::fixture_config;
using vlm::testing::fixture_inputs;
using vlm::testing::max_abs_diff;

namespace {

// Rows [t0, t1) of sample b of logits [B, T, V], flattened.
std::vector<float> logit_rows(const vlm::Tensor& logits, int64_t b, int64_t t0, int64_t t1) {
  const int64_t T = logits.dim(1), V = logits.dim(2);
  const float* p = logits.data() + (b * T) * V;
  return std::vector<float>(p + t0 * V, p + t1 * V);
}

// Sample b of a batch (input_ids, attention_mask) with images [i0, i1) of pixel_values.
vlm::Inputs one_sample(const vlm::Inputs& in, int64_t b, int64_t i0, int64_t i1) {
  vlm::Inputs out;
  const vlm::Shape s = in.shape("input_ids");
  for (const char* name : {"input_ids", "attention_mask"}) {
    const std::vector<int64_t> v = in.ints(name);
    out.set_ints(name, {1, s[1]}, std::vector<int64_t>(v.begin() + b * s[1], v.begin() + (b + 1) * s[1]));
  }
  out.set_floats("pixel_values", vlm::slice(in.floats("pixel_values"), 0, i0, i1));
  return out;
}

// Greedy decoding that bans `eos` (HF generate with min_new_tokens = max_new_tokens, as the
// fixtures were made), with or without the cache.
std::vector<int64_t> greedy_no_eos(vlm::Architecture& arch, const vlm::Inputs& in, int n, int64_t eos, bool cache) {
  vlm::NoGradGuard no_grad;
  const int64_t B = in.shape("input_ids")[0];
  std::vector<std::vector<int64_t>> rows(static_cast<std::size_t>(B));
  auto pick = [&](const vlm::Tensor& logits) {
    std::vector<int64_t> next;
    const int64_t T = logits.dim(1), V = logits.dim(2);
    for (int64_t b = 0; b < B; ++b) {
      const float* row = logits.data() + (b * T + T - 1) * V;
      int64_t best = -1;
      for (int64_t v = 0; v < V; ++v)
        if (v != eos && (best < 0 || row[v] > row[best])) best = v;
      next.push_back(best);
      rows[static_cast<std::size_t>(b)].push_back(best);
    }
    return next;
  };
  if (cache) {
    auto [logits, state] = arch.prefill(in);
    for (int i = 0; i < n; ++i) {
      const auto next = pick(logits);
      if (i + 1 < n) logits = arch.decode(*state, next);
    }
  } else {
    vlm::Inputs cur = in;
    for (int i = 0; i < n; ++i) {
      const auto next = pick(arch.forward(cur).logits);
      if (i + 1 < n) cur = arch.append_tokens(cur, next);
    }
  }
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return flat;
}

std::unique_ptr<vlm::Architecture> build(const nlohmann::json& j) {
  vlm::Rng rng(7);
  return vlm::make_architecture(vlm::io::HfConfig(j, "config.json"), rng);
}

void expect_config_error(const nlohmann::json& j, const std::string& key_path) {
  INFO("expecting a ConfigError naming " << key_path);
  try {
    build(j);
    FAIL("no error");
  } catch (const vlm::io::ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("config.json: " + key_path + ":"));
  }
}

// Copies the fixture's config and weights to a temp folder, renaming weight prefixes.
fs::path renamed_copy(const std::string& name, const std::vector<std::pair<std::string, std::string>>& renames,
                      const std::string& tag) {
  const fs::path out = fs::temp_directory_path() / ("vlm_llava_" + tag);
  fs::remove_all(out);
  fs::create_directories(out);
  fs::copy_file(fixture(name) / "config.json", out / "config.json");
  const auto st = vlm::io::read_safetensors((fixture(name) / "model.safetensors").string());
  std::map<std::string, vlm::io::RawTensor> t;
  for (const auto& [n, raw] : st.tensors) {
    std::string renamed = n;
    for (const auto& [from, to] : renames)
      if (n.rfind(from, 0) == 0) {
        renamed = to + n.substr(from.size());
        break;
      }
    t.emplace(renamed, raw);
  }
  vlm::io::write_safetensors((out / "model.safetensors").string(), t, {{"format", "pt"}});
  return out;
}

}  // namespace

TEST_CASE("llava: a batch gives the same logits as its samples one by one", "[llava]") {
  vlm::NoGradGuard no_grad;
  struct Case {
    std::string name;
    std::vector<std::pair<int64_t, int64_t>> images;  // per sample: its rows of pixel_values
  };
  for (const Case& c : {Case{"llava_tiny", {{0, 1}, {1, 2}}}, Case{"llava_layers_full", {{0, 2}, {2, 3}}}}) {
    DYNAMIC_SECTION(c.name) {
      auto arch = vlm::load_pretrained(fixture(c.name).string());
      const vlm::Inputs in = fixture_inputs(c.name);
      const vlm::Tensor batched = arch->forward(in).logits;
      const int64_t T = batched.dim(1);
      for (int64_t b = 0; b < 2; ++b) {
        const auto [i0, i1] = c.images[static_cast<std::size_t>(b)];
        const vlm::Tensor alone = arch->forward(one_sample(in, b, i0, i1)).logits;
        INFO("sample " << b);
        CHECK(max_abs_diff(logit_rows(batched, b, 0, T), alone.to_vector()) < 1e-5);
      }
    }
  }
}

TEST_CASE("llava: left padding gives each sample the logits and tokens it has alone", "[llava]") {
  vlm::NoGradGuard no_grad;
  auto arch = vlm::load_pretrained(fixture("llava_tiny").string());
  const vlm::Inputs in = fixture_inputs("llava_tiny");
  const int64_t T = in.shape("input_ids")[1], P = 2;
  const std::vector<int64_t> ids = in.ints("input_ids");
  // Sample 0 gets two more text tokens; sample 1 is left-padded by two pad tokens (id 1).
  std::vector<int64_t> pids(ids.begin(), ids.begin() + T), mask(static_cast<std::size_t>(2 * (T + P)), 1);
  pids.push_back(40);
  pids.push_back(41);
  pids.insert(pids.end(), P, 1);
  pids.insert(pids.end(), ids.begin() + T, ids.end());
  mask[static_cast<std::size_t>(T + P)] = mask[static_cast<std::size_t>(T + P + 1)] = 0;
  vlm::Inputs padded;
  padded.set_ints("input_ids", {2, T + P}, pids);
  padded.set_ints("attention_mask", {2, T + P}, mask);
  padded.set_floats("pixel_values", in.floats("pixel_values"));

  const vlm::Tensor batched = arch->forward(padded).logits;
  const vlm::Tensor alone0 = arch->forward(one_sample(in, 0, 0, 1)).logits;
  const vlm::Tensor alone1 = arch->forward(one_sample(in, 1, 1, 2)).logits;
  CHECK(max_abs_diff(logit_rows(batched, 0, 0, T), alone0.to_vector()) < 1e-5);
  CHECK(max_abs_diff(logit_rows(batched, 1, P, T + P), alone1.to_vector()) < 1e-5);

  // Generation: cache and no cache agree on the padded batch, and the padded row continues as alone.
  const auto with_cache = vlm::greedy_generate(*arch, padded, 5, true);
  CHECK(with_cache == vlm::greedy_generate(*arch, padded, 5, false));
  CHECK(with_cache[1] == vlm::greedy_generate(*arch, one_sample(in, 1, 1, 2), 5, true)[0]);
}

TEST_CASE("llava: greedy generation with and without the KV cache agree and match transformers", "[llava]") {
  for (const std::string name : {"llava_tiny", "llava_layers_full"}) {
    DYNAMIC_SECTION(name) {
      auto arch = vlm::load_pretrained(fixture(name).string());
      const vlm::Inputs in = fixture_inputs(name);
      const std::vector<int64_t> ref = in.ints("generated");
      const int n = static_cast<int>(in.shape("generated")[1]);
      // Plain greedy: the two paths agree token for token.
      CHECK(vlm::greedy_generate(*arch, in, n, true) == vlm::greedy_generate(*arch, in, n, false));
      // The fixtures come from generate(min_new_tokens = max_new_tokens): EOS (2) is banned.
      CHECK(greedy_no_eos(*arch, in, n, 2, true) == ref);
      CHECK(greedy_no_eos(*arch, in, n, 2, false) == ref);
    }
  }
}

TEST_CASE("llava: decode continues the prompt exactly as a full forward does", "[llava]") {
  vlm::NoGradGuard no_grad;
  auto arch = vlm::load_pretrained(fixture("llava_layers_full").string());
  const vlm::Inputs in = fixture_inputs("llava_layers_full");
  auto [prompt_logits, state] = arch->prefill(in);
  CHECK(max_abs_diff(prompt_logits.to_vector(), arch->forward(in).logits.to_vector()) == 0.0);
  vlm::Inputs cur = in;
  for (const std::vector<int64_t>& next : {std::vector<int64_t>{7, 8}, std::vector<int64_t>{6, 90}}) {
    const vlm::Tensor step = arch->decode(*state, next);  // [B, 1, V]
    cur = arch->append_tokens(cur, next);
    const vlm::Tensor full = arch->forward(cur).logits;
    const int64_t T = full.dim(1);
    for (int64_t b = 0; b < 2; ++b) CHECK(max_abs_diff(logit_rows(step, b, 0, 1), logit_rows(full, b, T - 1, T)) < 1e-5);
  }
}

TEST_CASE("llava: unsupported config values are ConfigErrors naming the key", "[llava][config]") {
  const nlohmann::json base = fixture_config("llava_tiny");
  REQUIRE_NOTHROW(build(base));
  nlohmann::json j = base;
  j["vision_feature_select_strategy"] = "cls_only";
  expect_config_error(j, "vision_feature_select_strategy");
  j = base;
  j["text_config"]["rope_parameters"]["rope_type"] = "linear";
  expect_config_error(j, "text_config.rope_parameters.rope_type");
  j = base;
  j["text_config"].erase("rope_parameters");
  j["text_config"]["rope_theta"] = 5e5;
  j["text_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  expect_config_error(j, "text_config.rope_scaling.type");  // the key the one RoPE reader names
  j["text_config"]["rope_scaling"] = nullptr;  // null is "no scaling"
  CHECK_NOTHROW(build(j));
  j = base;
  j["text_config"]["hidden_act"] = "swiglu_magic";
  expect_config_error(j, "text_config.hidden_act");
  j = base;
  j["vision_config"]["hidden_act"] = "mish";
  expect_config_error(j, "vision_config.hidden_act");
  j = base;
  j["projector_hidden_act"] = "softplus";
  expect_config_error(j, "projector_hidden_act");
  j = base;
  j["vision_feature_layer"] = -5;  // 3 layers: hidden_states has 4 entries
  expect_config_error(j, "vision_feature_layer");
  j = base;
  j["vision_feature_layer"] = nlohmann::json::array({-1, 4});
  expect_config_error(j, "vision_feature_layer");
  j = base;
  j["vision_config"]["model_type"] = "siglip_vision_model";
  expect_config_error(j, "vision_config.model_type");
  j = base;
  j["text_config"]["model_type"] = "mistral";
  expect_config_error(j, "text_config.model_type");
}

TEST_CASE("llava: vision_feature_layer may be an int or a list", "[llava][config]") {
  nlohmann::json j = fixture_config("llava_tiny");
  j["vision_feature_layer"] = -1;
  auto single = build(j);
  j["vision_feature_layer"] = nlohmann::json::array({-4, 1, -1});
  auto multi = build(j);
  auto in_dim = [](vlm::Architecture& a) {
    for (auto& [name, t] : vlm::named_parameters(a))
      if (name == "multi_modal_projector.linear_1.weight") return t.dim(1);
    return int64_t{-1};
  };
  CHECK(in_dim(*single) == 32);
  CHECK(in_dim(*multi) == 3 * 32);
  // Both run on the fixture's inputs (random weights): 16 tokens per image, as "default" drops CLS.
  vlm::NoGradGuard no_grad;
  const vlm::Inputs in = fixture_inputs("llava_tiny");
  const vlm::ForwardOutput a = single->forward(in), b = multi->forward(in);
  CHECK(a.stages.at("vision_hidden_states").shape() == vlm::Shape{2, 16, 32});
  CHECK(b.stages.at("vision_hidden_states").shape() == vlm::Shape{2, 16, 96});
  CHECK(b.logits.shape() == vlm::Shape{2, 25, 99});
}

TEST_CASE("llava: too few or too many image tokens is a clear error", "[llava]") {
  vlm::NoGradGuard no_grad;
  auto arch = vlm::load_pretrained(fixture("llava_tiny").string());
  vlm::Inputs in = fixture_inputs("llava_tiny");
  std::vector<int64_t> ids = in.ints("input_ids");
  ids[3] = 40;  // first image token of sample 0 becomes text
  in.set_ints("input_ids", in.shape("input_ids"), ids);
  CHECK_THROWS_WITH(arch->forward(in), Catch::Contains("image features and image tokens do not match") &&
                                           Catch::Contains("31 image tokens") && Catch::Contains("= 32"));
}

TEST_CASE("llava: weights load from every layout transformers accepts and save in the file's", "[llava][io]") {
  vlm::NoGradGuard no_grad;
  auto ref = vlm::load_pretrained(fixture("llava_tiny").string());
  const vlm::Inputs in = fixture_inputs("llava_tiny");
  const std::vector<float> want = ref->forward(in).logits.to_vector();

  // Our names are exactly the file's (so save_pretrained writes the same layout back).
  std::set<std::string> ours, file;
  for (const auto& [name, t] : vlm::named_parameters(*ref)) ours.insert(name);
  for (const auto& [name, t] : vlm::io::read_safetensors((fixture("llava_tiny") / "model.safetensors").string()).tensors)
    file.insert(name);
  CHECK(ours == file);

  const std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>> layouts = {
      {"v5", {{"language_model.model.", "model.language_model."},
              {"language_model.lm_head.", "lm_head."},
              {"vision_tower.", "model.vision_tower."},
              {"multi_modal_projector.", "model.multi_modal_projector."}}},
      {"v5_vision_model", {{"language_model.model.", "model.language_model."},
                           {"language_model.lm_head.", "lm_head."},
                           {"vision_tower.", "model.vision_tower.vision_model."},
                           {"multi_modal_projector.", "model.multi_modal_projector."}}},
      {"v4_legacy", {{"vision_tower.", "vision_tower.vision_model."}}},
  };
  for (const auto& [tag, renames] : layouts) {
    DYNAMIC_SECTION(tag) {
      const fs::path dir = renamed_copy("llava_tiny", renames, tag);
      auto arch = vlm::load_pretrained(dir.string());
      CHECK(arch->forward(in).logits.to_vector() == want);
      // Saving writes our (the 5.17 file's) names back.
      vlm::save_pretrained(*arch, dir.string());
      std::set<std::string> saved;
      for (const auto& [name, t] : vlm::io::read_safetensors((dir / "model.safetensors").string()).tensors)
        saved.insert(name);
      CHECK(saved == file);
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("CLIP vision tower: patch embedding is the stride-p convolution, hidden states as HF", "[llava][clip]") {
  vlm::NoGradGuard no_grad;
  for (const int64_t image : {9, 11}) {  // 11: the conv drops the 2 pixels past the last patch
    DYNAMIC_SECTION("image " << image) {
      vlm::ClipVisionConfig cfg;
      cfg.hidden_size = 8;
      cfg.intermediate_size = 12;
      cfg.num_layers = 2;
      cfg.num_heads = 2;
      cfg.patch_size = 3;
      cfg.image_size = image;
      vlm::Rng rng(3);
      vlm::ClipVision tower(cfg, rng);
      CHECK(tower.num_patches() == 9);
      CHECK(tower.position_embedding.shape() == vlm::Shape{10, 8});
      const int64_t n = 2, C = 3, p = 3, E = 8, g = 3;
      const vlm::Tensor px = vlm::Tensor::uniform({n, C, image, image}, rng, -1.0, 1.0);
      const vlm::Tensor pe = tower.patch_embed(px);
      REQUIRE(pe.shape() == vlm::Shape{n, g * g, E});
      double worst = 0.0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t gy = 0; gy < g; ++gy)
          for (int64_t gx = 0; gx < g; ++gx)
            for (int64_t e = 0; e < E; ++e) {
              double acc = 0.0;
              for (int64_t c = 0; c < C; ++c)
                for (int64_t y = 0; y < p; ++y)
                  for (int64_t x = 0; x < p; ++x)
                    acc += static_cast<double>(tower.patch_weight.data()[((e * C + c) * p + y) * p + x]) *
                           px.data()[((i * C + c) * image + gy * p + y) * image + gx * p + x];
              worst = std::max(worst, std::abs(acc - pe.data()[(i * g * g + gy * g + gx) * E + e]));
            }
      CHECK(worst < 1e-5);

      const std::vector<vlm::Tensor> hs = tower.forward(px);
      REQUIRE(hs.size() == 3);
      for (const auto& h : hs) CHECK(h.shape() == vlm::Shape{n, 10, E});
      // [0] is the embedding after pre_layrnorm (the tower's LayerNorms start as weight 1, bias 0).
      const vlm::Tensor emb = vlm::add(vlm::concat<float>({vlm::broadcast_to(vlm::reshape(tower.class_embedding, {1, 1, E}), {n, 1, E}), pe}, 1),
                                       tower.position_embedding);
      CHECK(max_abs_diff(hs[0].to_vector(), vlm::layer_norm(emb, tower.pre_layrnorm.weight, tower.pre_layrnorm.bias, 1e-5).to_vector()) < 1e-6);
      CHECK(max_abs_diff(hs[1].to_vector(), tower.layers[0]->forward(hs[0]).to_vector()) == 0.0);
      const std::vector<vlm::Tensor> early = tower.forward(px, 1);
      REQUIRE(early.size() == 2);
      CHECK(early[1].to_vector() == hs[1].to_vector());
      std::vector<std::string> names;
      for (const auto& [name, t] : vlm::named_parameters(tower)) names.push_back(name);
      CHECK(names.front() == "embeddings.class_embedding");
      CHECK(std::count(names.begin(), names.end(), "encoder.layers.1.self_attn.out_proj.bias") == 1);
      CHECK(names.back() == "post_layernorm.bias");
      CHECK(names.size() == 3 + 2 + 2 * 16 + 2);
    }
  }
  vlm::ClipVisionConfig cfg;
  cfg.hidden_size = 8;
  cfg.intermediate_size = 8;
  cfg.num_layers = 1;
  cfg.num_heads = 2;
  cfg.patch_size = 4;
  cfg.image_size = 8;
  vlm::Rng rng(1);
  vlm::ClipVision tower(cfg, rng);
  CHECK_THROWS_WITH(tower.forward(vlm::Tensor::zeros({1, 3, 12, 12})), Catch::Contains("doesn't match the model (8*8)"));
}
