// Fuyu beyond the generic parity run (test_parity.cpp): preprocessing from raw pixels, batch vs
// one-by-one, cache vs no cache, the per-head fused QKV layout against a hand-written Persimmon
// attention, config errors, and the weight-name layouts transformers accepts.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "architectures/fuyu/fuyu_model.h"
#include "architectures/fuyu/preprocess.h"
#include "lib/core/random.h"
#include "lib/data/resize.h"
#include "lib/io/safetensors.h"
#include "lib/ops/ops.h"
#include "tests/architectures/fixtures.h"

namespace fs = std::filesystem;
using vlm::Inputs;
using vlm::Shape;
using vlm::Tensor;

using vlm::testing::fixture;
using vlm::testing::fixture_config;
using vlm::testing::fixture_inputs;
using vlm::testing::max_abs_diff;

namespace {

std::vector<int64_t> row(const std::vector<int64_t>& v, int64_t b, int64_t T) {
  return {v.begin() + b * T, v.begin() + (b + 1) * T};
}

// Sample b of a batch (input_ids, attention_mask, image_patches [1, N, P]).
Inputs sample_of(const Inputs& in, int64_t b) {
  const int64_t T = in.shape("input_ids")[1];
  Inputs out;
  out.set_ints("input_ids", {1, T}, row(in.ints("input_ids"), b, T));
  out.set_ints("attention_mask", {1, T}, row(in.ints("attention_mask"), b, T));
  out.set_floats("image_patches", vlm::slice(in.floats("image_patches"), 0, b, b + 1).clone());
  return out;
}

std::unique_ptr<vlm::Architecture> make_from_json(const nlohmann::json& j) {
  vlm::Rng rng(7);
  return vlm::make_architecture(vlm::io::HfConfig(j, "config.json"), rng);
}

vlm::fuyu::Fuyu& as_fuyu(vlm::Architecture& a) { return dynamic_cast<vlm::fuyu::Fuyu&>(a); }

}  // namespace

TEST_CASE("fuyu: raw images through the preprocessing give the fixture's image_patches and prompt", "[fuyu]") {
  const Inputs in = fixture_inputs("fuyu_gelu_noqk");
  const Tensor patches = in.floats("image_patches");  // [2, 12, 75]
  const std::vector<int64_t> ids = in.ints("input_ids");
  const int64_t T = in.shape("input_ids")[1];
  vlm::fuyu::ImageProcessorOptions opt;
  opt.patch_height = opt.patch_width = 5;
  const vlm::fuyu::PromptTokens tok{7, 8, 1, 0};  // the fixture's image / newline / BOS / pad ids
  const std::vector<std::pair<int64_t, int64_t>> grids = {{3, 4}, {4, 3}};
  std::vector<vlm::fuyu::Sample> samples;
  for (int64_t i = 0; i < 2; ++i) {
    const Tensor raw = in.floats("image_raw_" + std::to_string(i));
    const vlm::fuyu::ProcessedImage p = vlm::fuyu::preprocess_image(raw, opt);
    CHECK(p.grid_h == grids[static_cast<std::size_t>(i)].first);
    CHECK(p.grid_w == grids[static_cast<std::size_t>(i)].second);
    CHECK(p.resized_h == raw.dim(0));  // smaller than the 1080x1920 box: no resize
    const Tensor ref = vlm::reshape(vlm::slice(patches, 0, i, i + 1), {12, 75});
    CHECK(max_abs_diff(p.patches, ref) <= 1e-6);
    // The prompt: [image x grid_w, newline] x grid_h, BOS, then the text.
    const std::vector<int64_t> r = row(ids, i, T);
    const auto n_img = static_cast<std::ptrdiff_t>(p.grid_h * (p.grid_w + 1) + 1);
    const std::vector<int64_t> text(r.begin() + n_img, r.end());
    CHECK(vlm::fuyu::sample_ids(p.grid_h, p.grid_w, text, tok) == r);
    samples.push_back({p, text});
  }
  // A padded pixel: raw 1.0 -> (1/255 - 0.5) / 0.5. Image 0 is 13x17, padded to 15x20: pixel (0, 19)
  // is patch (0, 3), (py, px) = (0, 4).
  const Tensor p0 = vlm::fuyu::preprocess_image(in.floats("image_raw_0"), opt).patches;
  CHECK(p0.data()[3 * 75 + 4 * 3 + 0] == Approx((1.0 / 255.0 - 0.5) / 0.5).epsilon(1e-7));
  CHECK(p0.data()[3 * 75 + 4 * 3 + 0] == Approx(-0.99216).margin(1e-5));

  // End to end: raw pixels and text -> the processor's batch -> the reference logits.
  const Inputs built = vlm::fuyu::make_inputs(samples, tok);
  CHECK(built.ints("input_ids") == ids);
  CHECK(built.ints("attention_mask") == in.ints("attention_mask"));
  CHECK(built.shape("image_patches") == Shape{24, 75});
  auto arch = vlm::load_pretrained(fixture("fuyu_gelu_noqk").string());
  vlm::NoGradGuard no_grad;
  CHECK(max_abs_diff(arch->forward(built).logits, in.floats("logits")) <= 1e-4);
}

TEST_CASE("fuyu: resize only above the box, keeping the aspect ratio", "[fuyu]") {
  // 8x8 image, box 4x6: scale min(4/8, 6/8) = 0.5 -> 4x4; ramp 10·x along the width.
  std::vector<float> px;
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c) px.push_back(static_cast<float>(10 * x + c));
  const Tensor img = Tensor::from({8, 8, 3}, px);
  vlm::fuyu::ImageProcessorOptions opt;
  opt.patch_height = opt.patch_width = 2;
  opt.target_height = 4;
  opt.target_width = 6;
  const vlm::fuyu::ProcessedImage p = vlm::fuyu::preprocess_image(img, opt);
  CHECK(p.resized_h == 4);
  CHECK(p.resized_w == 4);
  CHECK(p.grid_h == 2);
  CHECK(p.grid_w == 2);
  // Interior output column 1 averages input columns 1..4 with the triangle weights 1/8, 3/8, 3/8,
  // 1/8 (antialiased bilinear, scale 2): 25 for channel 0.
  const Tensor r = vlm::data::resize_bilinear_aa(img, 4, 4);
  CHECK(r.data()[(0 * 4 + 1) * 3 + 0] == 25.0f);
  CHECK(r.data()[(3 * 4 + 2) * 3 + 1] == 46.0f);
  // An image inside the box is not resized; 5x7 with patch 2 pads to 6x8.
  vlm::fuyu::ImageProcessorOptions opt2;
  opt2.patch_height = opt2.patch_width = 2;
  const vlm::fuyu::ProcessedImage q = vlm::fuyu::preprocess_image(Tensor::full({5, 7, 3}, 255.0f), opt2);
  CHECK(q.resized_h == 5);
  CHECK(q.resized_w == 7);
  CHECK(q.grid_h == 3);
  CHECK(q.grid_w == 4);
  CHECK(q.patches.data()[0] == 1.0f);                                     // 255 -> +1
  CHECK(q.patches.data()[q.patches.numel() - 1] == Approx(-0.99215686));  // bottom-right: padding
}

TEST_CASE("fuyu: a batch equals its samples run one by one", "[fuyu]") {
  for (const char* name : {"fuyu_tiny", "fuyu_gelu_noqk"}) {
    DYNAMIC_SECTION(name) {
      auto arch = vlm::load_pretrained(fixture(name).string());
      const Inputs in = fixture_inputs(name);
      vlm::NoGradGuard no_grad;
      const vlm::ForwardOutput full = arch->forward(in);
      const int64_t B = in.shape("input_ids")[0];
      REQUIRE(B == 2);
      for (int64_t b = 0; b < B; ++b) {
        const vlm::ForwardOutput one = arch->forward(sample_of(in, b));
        CHECK(max_abs_diff(one.logits, vlm::slice(full.logits, 0, b, b + 1)) <= 1e-5);
        // (a different GEMM size may round the patch embedding differently)
        CHECK(max_abs_diff(one.stages.at("inputs_embeds"), vlm::slice(full.stages.at("inputs_embeds"), 0, b, b + 1)) <=
              1e-6);
      }
      // image_patches flattened to [N_total, P] (the processor's layout) gives the same result.
      Inputs flat = in;
      const Tensor p = in.floats("image_patches");
      flat.set_floats("image_patches", vlm::reshape(p, {p.dim(0) * p.dim(1), p.dim(2)}));
      CHECK(arch->forward(flat).logits.to_vector() == full.logits.to_vector());
    }
  }
}

TEST_CASE("fuyu: KV-cache decoding equals full recomputation", "[fuyu]") {
  for (const char* name : {"fuyu_tiny", "fuyu_gelu_noqk"}) {
    DYNAMIC_SECTION(name) {
      auto arch = vlm::load_pretrained(fixture(name).string());
      const Inputs in = fixture_inputs(name);
      vlm::NoGradGuard no_grad;
      CHECK(vlm::greedy_generate(*arch, in, 10, true) == vlm::greedy_generate(*arch, in, 10, false));
      // Logits step by step: prefill == forward, each decode step == forward on the longer input.
      auto [logits, state] = arch->prefill(in);
      CHECK(max_abs_diff(logits, arch->forward(in).logits) <= 1e-5);
      Inputs cur = in;
      const int64_t B = in.shape("input_ids")[0];
      for (int step = 0; step < 4; ++step) {
        const std::vector<int64_t> next = {11 + step, 40 + 3 * step};
        REQUIRE(static_cast<int64_t>(next.size()) == B);
        const Tensor dec = arch->decode(*state, next);
        cur = arch->append_tokens(cur, next);
        const Tensor ref = arch->forward(cur).logits;
        const int64_t T = ref.dim(1);
        CHECK(max_abs_diff(dec, vlm::slice(ref, 1, T - 1, T)) <= 1e-5);
      }
    }
  }
}

TEST_CASE("fuyu: left padding with HF-generate positions matches the unpadded sample", "[fuyu]") {
  auto arch = vlm::load_pretrained(fixture("fuyu_tiny").string());
  const Inputs in = fixture_inputs("fuyu_tiny");
  const int64_t T = in.shape("input_ids")[1];
  // Row 1 keeps all T tokens; row 0 drops its last 3 text tokens and is left-padded by 3.
  const int64_t pad = 3;
  const std::vector<int64_t> ids = in.ints("input_ids");
  std::vector<int64_t> pids(static_cast<std::size_t>(pad), 0), mask(static_cast<std::size_t>(pad), 0);
  pids.insert(pids.end(), ids.begin(), ids.begin() + (T - pad));
  mask.insert(mask.end(), static_cast<std::size_t>(T - pad), 1);
  pids.insert(pids.end(), ids.begin() + T, ids.end());
  mask.insert(mask.end(), static_cast<std::size_t>(T), 1);
  std::vector<int64_t> pos;  // attention_mask.cumsum(-1) - 1, masked to 1 (HF generate)
  for (int64_t b = 0; b < 2; ++b) {
    int64_t c = 0;
    for (int64_t t = 0; t < T; ++t) {
      c += mask[static_cast<std::size_t>(b * T + t)];
      pos.push_back(mask[static_cast<std::size_t>(b * T + t)] ? c - 1 : 1);
    }
  }
  Inputs padded = in;
  padded.set_ints("input_ids", {2, T}, pids);
  padded.set_ints("attention_mask", {2, T}, mask);
  padded.set_ints("position_ids", {2, T}, pos);
  Inputs short0 = sample_of(in, 0);
  short0.set_ints("input_ids", {1, T - pad}, std::vector<int64_t>(ids.begin(), ids.begin() + (T - pad)));
  short0.set_ints("attention_mask", {1, T - pad}, std::vector<int64_t>(static_cast<std::size_t>(T - pad), 1));
  vlm::NoGradGuard no_grad;
  const Tensor lp = arch->forward(padded).logits;
  CHECK(max_abs_diff(vlm::slice(vlm::slice(lp, 0, 0, 1), 1, pad, T), arch->forward(short0).logits) <= 1e-5);
  CHECK(max_abs_diff(vlm::slice(lp, 0, 1, 2), arch->forward(sample_of(in, 1)).logits) <= 1e-5);
  // Generation continues the positions of each row; cache and no cache agree, and row 0 generates
  // what the unpadded sample generates alone.
  const auto with_cache = vlm::greedy_generate(*arch, padded, 6, true);
  CHECK(with_cache == vlm::greedy_generate(*arch, padded, 6, false));
  CHECK(with_cache[0] == vlm::greedy_generate(*arch, short0, 6, true)[0]);
}

namespace {

// Persimmon attention written out by hand (modeling_persimmon.py): fused [B,S,3D] viewed as
// (H, 3, hd) per head (or, with per_head=false, the wrong [Q | K | V] split), q/k LayerNorm over
// hd, rotate-half RoPE over the first R dims with theta, causal softmax, dense.
std::vector<double> persimmon_attention_ref(const std::vector<float>& x, int64_t S, int64_t C, int64_t H,
                                            const vlm::fuyu::Fuyu& m, bool per_head) {
  const auto& attn = m.language_model.layers[0]->self_attn;
  const int64_t hd = C / H, R = m.parsed_config().rotary_ndims;
  const double theta = m.parsed_config().rope_theta;
  const float* W = attn.qkv->weight.data();
  const float* bias = attn.qkv->bias.data();
  std::vector<double> fused(static_cast<std::size_t>(S * 3 * C));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t o = 0; o < 3 * C; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < C; ++i) acc += static_cast<double>(W[o * C + i]) * x[static_cast<std::size_t>(s * C + i)];
      fused[static_cast<std::size_t>(s * 3 * C + o)] = acc;
    }
  auto at = [&](int64_t s, int64_t h, int role, int64_t d) {
    const int64_t col = per_head ? h * 3 * hd + role * hd + d : role * C + h * hd + d;
    return fused[static_cast<std::size_t>(s * 3 * C + col)];
  };
  auto layer_norm = [&](std::vector<double> v, const vlm::Norm<float>& n) {
    const auto& ln = std::get<vlm::LayerNorm<float>>(n.impl);
    double mean = 0, var = 0;
    for (double e : v) mean += e;
    mean /= static_cast<double>(v.size());
    for (double e : v) var += (e - mean) * (e - mean);
    var /= static_cast<double>(v.size());
    for (std::size_t d = 0; d < v.size(); ++d)
      v[d] = (v[d] - mean) / std::sqrt(var + ln.eps) * ln.weight.data()[d] + ln.bias.data()[d];
    return v;
  };
  auto rope = [&](std::vector<double> v, int64_t pos) {
    std::vector<double> out = v;
    for (int64_t j = 0; j < R / 2; ++j) {
      const double inv = 1.0 / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(R));
      const double a = static_cast<double>(pos) * inv;
      const auto lo = static_cast<std::size_t>(j), hi = static_cast<std::size_t>(j + R / 2);
      out[lo] = v[lo] * std::cos(a) - v[hi] * std::sin(a);
      out[hi] = v[hi] * std::cos(a) + v[lo] * std::sin(a);
    }
    return out;
  };
  std::vector<double> heads(static_cast<std::size_t>(S * C));
  for (int64_t h = 0; h < H; ++h) {
    std::vector<std::vector<double>> q(static_cast<std::size_t>(S)), k(q), v(q);
    for (int64_t s = 0; s < S; ++s) {
      auto& qs = q[static_cast<std::size_t>(s)];
      auto& ks = k[static_cast<std::size_t>(s)];
      auto& vs = v[static_cast<std::size_t>(s)];
      for (int64_t d = 0; d < hd; ++d) {
        qs.push_back(at(s, h, 0, d));
        ks.push_back(at(s, h, 1, d));
        vs.push_back(at(s, h, 2, d));
      }
      if (attn.q_norm) qs = layer_norm(qs, *attn.q_norm);
      if (attn.k_norm) ks = layer_norm(ks, *attn.k_norm);
      qs = rope(qs, s);
      ks = rope(ks, s);
    }
    for (int64_t s = 0; s < S; ++s) {
      std::vector<double> sc;
      double mx = -1e300;
      for (int64_t t = 0; t <= s; ++t) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d)
          dot += q[static_cast<std::size_t>(s)][static_cast<std::size_t>(d)] *
                 k[static_cast<std::size_t>(t)][static_cast<std::size_t>(d)];
        sc.push_back(dot / std::sqrt(static_cast<double>(hd)));
        mx = std::max(mx, sc.back());
      }
      double z = 0;
      for (double& e : sc) z += (e = std::exp(e - mx));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (int64_t t = 0; t <= s; ++t)
          acc += sc[static_cast<std::size_t>(t)] / z * v[static_cast<std::size_t>(t)][static_cast<std::size_t>(d)];
        heads[static_cast<std::size_t>(s * C + h * hd + d)] = acc;
      }
    }
  }
  const float* Wo = attn.o_proj.weight.data();
  const float* bo = attn.o_proj.bias.data();
  std::vector<double> out(static_cast<std::size_t>(S * C));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t o = 0; o < C; ++o) {
      double acc = bo[o];
      for (int64_t i = 0; i < C; ++i)
        acc += static_cast<double>(Wo[o * C + i]) * heads[static_cast<std::size_t>(s * C + i)];
      out[static_cast<std::size_t>(s * C + o)] = acc;
    }
  return out;
}

nlohmann::json tiny_config(bool qk_layernorm, double partial) {
  nlohmann::json j = fixture_config("fuyu_tiny");
  for (nlohmann::json* c : {&j, &j["text_config"]}) {
    (*c)["hidden_size"] = 16;
    (*c)["num_attention_heads"] = 2;  // head_dim 8
    (*c)["num_hidden_layers"] = 1;
    (*c)["qk_layernorm"] = qk_layernorm;
    (*c)["rope_parameters"]["partial_rotary_factor"] = partial;
    (*c)["rope_parameters"]["rope_theta"] = 100.0;
  }
  return j;
}

}  // namespace

TEST_CASE("fuyu: fused query_key_value is split per head as Persimmon's view(B, S, H, 3, hd)", "[fuyu]") {
  vlm::NoGradGuard no_grad;
  SECTION("role-coded bias: each output row of the fused projection says which (head, q/k/v, dim) it is") {
    auto arch = make_from_json(tiny_config(false, 0.5));
    auto& attn = as_fuyu(*arch).language_model.layers[0]->self_attn;
    const int64_t C = 16, hd = 8;
    // Zero weight, bias row r = code of its role under the per-head layout; q = k = 0, so attention is
    // uniform and the output is v (the same at every position). dense = identity.
    float* w = attn.qkv->weight.data();
    float* b = attn.qkv->bias.data();
    std::fill(w, w + attn.qkv->weight.numel(), 0.0f);
    for (int64_t r = 0; r < 3 * C; ++r) {
      const int64_t h = r / (3 * hd), role = (r % (3 * hd)) / hd, d = r % hd;
      b[r] = role == 2 ? static_cast<float>(100 * (h + 1) + d) : 0.0f;
    }
    float* wo = attn.o_proj.weight.data();
    std::fill(wo, wo + C * C, 0.0f);
    for (int64_t i = 0; i < C; ++i) wo[i * C + i] = 1.0f;
    std::fill(attn.o_proj.bias.data(), attn.o_proj.bias.data() + C, 0.0f);
    const Tensor x = Tensor::zeros({1, 3, C});
    vlm::AttnMask mask;
    mask.causal = true;
    const Tensor y = attn.forward(x, nullptr, mask);
    REQUIRE(y.numel() == 3 * C);
    for (int64_t s = 0; s < 3; ++s)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t d = 0; d < hd; ++d) {
          INFO("position " << s << ", output dim " << h * hd + d);
          CHECK(y.data()[s * C + h * hd + d] == Approx(100 * (h + 1) + d).margin(1e-4));
        }
  }
  SECTION("random weights, applied q/k: qk-LayerNorm, partial rotary, causal softmax") {
    for (const bool qk : {true, false}) {
      for (const double partial : {0.5, 0.25, 1.0}) {
        DYNAMIC_SECTION("qk_layernorm " << qk << ", partial_rotary_factor " << partial) {
          auto arch = make_from_json(tiny_config(qk, partial));
          auto& m = as_fuyu(*arch);
          auto& attn = m.language_model.layers[0]->self_attn;
          vlm::Rng rng(5);
          m.visit("", [&](const std::string&, Tensor& t) {
            float* d = t.data();
            for (int64_t i = 0; i < t.numel(); ++i) d[i] = static_cast<float>(rng.uniform(-0.8, 0.8));
          });
          const int64_t S = 5, C = 16;
          std::vector<float> xs;
          for (int64_t i = 0; i < S * C; ++i) xs.push_back(static_cast<float>(rng.uniform(-2, 2)));
          std::vector<int64_t> pos;
          for (int64_t s = 0; s < S; ++s) pos.push_back(s);
          vlm::AttnMask mask;
          mask.causal = true;
          vlm::RopeTables<float> rope;
          if (m.has_rope()) rope = m.rope_for(pos, 1, S);
          const Tensor y = attn.forward(Tensor::from({1, S, C}, xs), m.has_rope() ? &rope : nullptr, mask);
          const std::vector<double> ref = persimmon_attention_ref(xs, S, C, 2, m, true);
          const std::vector<double> wrong = persimmon_attention_ref(xs, S, C, 2, m, false);
          double diff = 0, diff_wrong = 0;
          for (std::size_t i = 0; i < ref.size(); ++i) {
            diff = std::max(diff, std::abs(ref[i] - y.data()[i]));
            diff_wrong = std::max(diff_wrong, std::abs(wrong[i] - y.data()[i]));
          }
          CHECK(m.parsed_config().rotary_ndims == static_cast<int64_t>(8 * partial));
          CHECK(diff <= 1e-5);
          CHECK(diff_wrong > 1e-2);  // the [Q | K | V] split is a different function
        }
      }
    }
  }
}

TEST_CASE("fuyu: config values are read as transformers 5.17 reads them, unsupported ones are ConfigErrors", "[fuyu]") {
  using vlm::io::ConfigError;
  SECTION("rope_parameters wins over the stale flat partial_rotary_factor") {
    nlohmann::json j = fixture_config("fuyu_gelu_noqk");
    REQUIRE(j["text_config"]["partial_rotary_factor"] == 0.5);
    auto a = make_from_json(j);
    CHECK(as_fuyu(*a).parsed_config().partial_rotary_factor == 0.25);
    CHECK(as_fuyu(*a).parsed_config().rotary_ndims == 4);
    CHECK(as_fuyu(*a).parsed_config().rope_theta == 10000.0);
    CHECK(as_fuyu(*a).parsed_config().image_token_id == 7);
    CHECK(as_fuyu(*a).parsed_config().patch_size == 5);
    // Without it in rope_parameters the flat key is used; a v4 config with flat rope_theta too.
    j["text_config"].erase("rope_parameters");
    j["text_config"]["rope_theta"] = 1234.0;
    auto b = make_from_json(j);
    CHECK(as_fuyu(*b).parsed_config().rotary_ndims == 8);
    CHECK(as_fuyu(*b).parsed_config().rope_theta == 1234.0);
    // Neither: PersimmonConfig's default theta (the mixin's 10000, not FuyuConfig's 25000).
    j["text_config"].erase("rope_theta");
    CHECK(as_fuyu(*make_from_json(j)).parsed_config().rope_theta == 10000.0);
    // No text_config: FuyuConfig builds it from the top-level keys, passing rope_parameters only.
    nlohmann::json flat = fixture_config("fuyu_gelu_noqk");
    flat.erase("text_config");
    auto c = make_from_json(flat);
    CHECK(as_fuyu(*c).parsed_config().rotary_ndims == 4);
    CHECK(as_fuyu(*c).parsed_config().rope_theta == 10000.0);
    CHECK(std::get<vlm::MlpConfig>(as_fuyu(*c).parsed_config().lm.block.mlp).act == vlm::Act::kGeluErf);
    CHECK_FALSE(as_fuyu(*c).parsed_config().lm.block.attn.qk_norm.has_value());
    flat["rope_parameters"].erase("partial_rotary_factor");
    CHECK(as_fuyu(*make_from_json(flat)).parsed_config().rotary_ndims == 8);  // flat 0.25 is not passed down
  }
  SECTION("unsupported hidden_act") {
    nlohmann::json j = fixture_config("fuyu_tiny");
    j["text_config"]["hidden_act"] = "swiglu";
    CHECK_THROWS_AS(make_from_json(j), ConfigError);
    CHECK_THROWS_WITH(make_from_json(j),
                      Catch::Contains("config.json: text_config.hidden_act") && Catch::Contains("swiglu"));
  }
  SECTION("rope type other than default") {
    nlohmann::json j = fixture_config("fuyu_tiny");
    j["text_config"]["rope_parameters"]["rope_type"] = "linear";
    j["text_config"]["rope_parameters"]["factor"] = 2.0;
    CHECK_THROWS_AS(make_from_json(j), ConfigError);
    CHECK_THROWS_WITH(make_from_json(j), Catch::Contains("config.json: text_config.rope_parameters.rope_type") &&
                                             Catch::Contains("linear"));
    nlohmann::json k = fixture_config("fuyu_tiny");
    k["text_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
    CHECK_THROWS_WITH(make_from_json(k), Catch::Contains("config.json: text_config.rope_scaling.type"));
  }
  SECTION("other structural errors name their key") {
    nlohmann::json j = fixture_config("fuyu_tiny");
    j["text_config"]["model_type"] = "llama";
    CHECK_THROWS_WITH(make_from_json(j), Catch::Contains("config.json: text_config.model_type"));
    j = fixture_config("fuyu_tiny");
    j["text_config"]["num_attention_heads"] = 5;
    CHECK_THROWS_WITH(make_from_json(j), Catch::Contains("config.json: text_config.num_attention_heads"));
    j = fixture_config("fuyu_tiny");
    j["text_config"]["rope_parameters"]["partial_rotary_factor"] = 0.375;  // 3 of 8 dims
    CHECK_THROWS_WITH(make_from_json(j), Catch::Contains("text_config.rope_parameters.partial_rotary_factor"));
    j = fixture_config("fuyu_tiny");
    j["image_token_id"] = 500;
    CHECK_THROWS_AS(make_from_json(j), ConfigError);
  }
}

TEST_CASE("fuyu: image token count and patch size are checked", "[fuyu]") {
  auto arch = vlm::load_pretrained(fixture("fuyu_tiny").string());
  const Inputs in = fixture_inputs("fuyu_tiny");
  vlm::NoGradGuard no_grad;
  std::vector<int64_t> ids = in.ints("input_ids");
  for (auto& id : ids)
    if (id == 7) {
      id = 9;
      break;
    }
  Inputs bad = in;
  bad.set_ints("input_ids", in.shape("input_ids"), ids);
  CHECK_THROWS_WITH(arch->forward(bad), Catch::Contains("image features and image tokens do not match") &&
                                            Catch::Contains("11 image tokens") && Catch::Contains("12 patch rows"));
  Inputs wrong_p = in;
  wrong_p.set_floats("image_patches", Tensor::zeros({2, 6, 47}));
  CHECK_THROWS_WITH(arch->forward(wrong_p), Catch::Contains("image_patches must be [..., 48]"));
  // Text only (no image_patches): the placeholders keep their token embeddings, as in HF.
  Inputs text_only = in;
  text_only.erase("image_patches");
  CHECK_NOTHROW(arch->forward(text_only));
}

TEST_CASE("fuyu: weight names are the file's; the v5 module layout loads to identical logits", "[fuyu]") {
  const fs::path dir = fixture("fuyu_tiny");
  const auto st = vlm::io::read_safetensors((dir / "model.safetensors").string());
  auto a = vlm::load_pretrained(dir.string());
  std::set<std::string> ours, file;
  for (const auto& [name, t] : vlm::named_parameters(*a)) ours.insert(name);
  for (const auto& [name, t] : st.tensors) file.insert(name);
  CHECK(ours == file);

  auto rename = [](const std::string& n) -> std::string {
    const std::vector<std::pair<std::string, std::string>> map = {
        {"language_model.model.", "model.language_model."},
        {"language_model.lm_head.", "lm_head."},
        {"vision_embed_tokens.", "model.vision_embed_tokens."}};
    for (const auto& [from, to] : map)
      if (n.rfind(from, 0) == 0) return to + n.substr(from.size());
    return n;
  };
  std::map<std::string, vlm::io::RawTensor> renamed;
  for (const auto& [name, t] : st.tensors) renamed.emplace(rename(name), t);
  CHECK(renamed.count("model.language_model.layers.0.self_attn.query_key_value.weight") == 1);
  CHECK(renamed.count("lm_head.weight") == 1);
  CHECK(renamed.count("model.vision_embed_tokens.bias") == 1);
  const fs::path out = fs::temp_directory_path() / "vlm_fuyu_v5_layout";
  fs::create_directories(out);
  fs::copy_file(dir / "config.json", out / "config.json", fs::copy_options::overwrite_existing);
  vlm::io::write_safetensors((out / "model.safetensors").string(), renamed, {{"format", "pt"}});
  auto b = vlm::load_pretrained(out.string());
  const Inputs in = fixture_inputs("fuyu_tiny");
  vlm::NoGradGuard no_grad;
  CHECK(a->forward(in).logits.to_vector() == b->forward(in).logits.to_vector());
  fs::remove_all(out);
}
