// The families' processors (raw RGB samples -> model inputs) and the shared image steps they use
// (lib/data/resize.h). The parity fixtures hold already-processed pixels, so each step is checked on
// its own: against hand-computed cases from the spec's rules (docs/architectures.md), and
// against values transformers 5.17 / torchvision 0.26 produced on the CPU for the formula images below
// (CLIPImageProcessor, Qwen2VLImageProcessor, IdeficsImageProcessor, FuyuImageProcessor, tvF.resize
// on uint8 tensors). Then each processor's batch runs through a tiny model of its family.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "architectures/registry.h"
#include "lib/core/random.h"
#include "lib/data/resize.h"
#include "lib/ops/ops.h"

using vlm::Inputs;
using vlm::kImageMarker;
using vlm::MultimodalSample;
using vlm::Shape;
using vlm::Tensor;
using vlm::data::Image;

namespace {

constexpr int64_t M = kImageMarker;

// The image the transformers reference values were made from: value (y·37 + x·11 + c·71 +
// (x·y mod 17)·5) mod 256 at (y, x, c).
Image formula_image(int64_t h, int64_t w) {
  Image im(h, w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        im.pixels[static_cast<std::size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>((y * 37 + x * 11 + c * 71 + (x * y) % 17 * 5) % 256);
  return im;
}

Image random_image(int64_t h, int64_t w, uint64_t seed) {
  vlm::Rng rng(seed);
  Image im(h, w);
  for (auto& p : im.pixels) p = static_cast<uint8_t>(rng.below(256));
  return im;
}

// A [H, W, C] tensor of 8-bit values from a row-major list.
Tensor hwc(int64_t h, int64_t w, int64_t c, const std::vector<int>& v) {
  REQUIRE(static_cast<int64_t>(v.size()) == h * w * c);
  return Tensor::from({h, w, c}, std::vector<float>(v.begin(), v.end()));
}

std::vector<int> as_ints(const Tensor& t) {
  std::vector<int> out;
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(static_cast<int>(t.data()[i]));
  return out;
}

std::vector<int64_t> row(const Inputs& in, const std::string& name, int64_t b) {
  const Shape s = in.shape(name);
  const std::vector<int64_t> v = in.ints(name);
  const int64_t n = static_cast<int64_t>(v.size()) / s[0];
  return {v.begin() + b * n, v.begin() + (b + 1) * n};
}

// `n` copies of `id`, then `tail`.
std::vector<int64_t> rep(int64_t n, int64_t id, std::vector<int64_t> tail = {}) {
  std::vector<int64_t> v(static_cast<std::size_t>(n), id);
  v.insert(v.end(), tail.begin(), tail.end());
  return v;
}

std::vector<int64_t> cat(std::vector<std::vector<int64_t>> parts) {
  std::vector<int64_t> v;
  for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
  return v;
}

std::unique_ptr<vlm::Processor> processor(const nlohmann::json& config, const nlohmann::json& options = nullptr) {
  const vlm::io::HfConfig cfg(config, "config.json");
  return vlm::family_for_config(cfg).make_processor(cfg, options, vlm::SpecialTokens{});
}

void expect_config_error(const nlohmann::json& config, const nlohmann::json& options, const std::string& key) {
  INFO("options " << options.dump() << ": expecting a ConfigError naming " << key);
  try {
    processor(config, options);
    FAIL("no error");
  } catch (const vlm::io::ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("processor options: " + key + ":"));
  }
}

// Values of transformers' output at given indices, as float32 literals it printed.
struct At3 {
  int64_t c, y, x;
  float v;
};

}  // namespace

// ---- lib/data: the shared image steps ----

TEST_CASE("image_to_tensor: HWC floats of the 8-bit values; a bad image is an error", "[preprocess]") {
  Image im(2, 3, {1, 2, 3});
  im.set(1, 2, {250, 128, 7});
  const Tensor t = vlm::data::image_to_tensor(im);
  CHECK(t.shape() == Shape{2, 3, 3});
  CHECK(t.data()[0] == 1.0f);
  CHECK(t.data()[(1 * 3 + 2) * 3 + 0] == 250.0f);
  CHECK(t.data()[(1 * 3 + 2) * 3 + 2] == 7.0f);
  Image bad = im;
  bad.pixels.pop_back();
  CHECK_THROWS_WITH(vlm::data::image_to_tensor(bad), Catch::Contains("pixel bytes"));
  CHECK_THROWS_AS(vlm::data::image_to_tensor(Image{}), vlm::Error);
}

TEST_CASE("bicubic antialiased resize: hand-computed Keys weights (a = -0.5) at scale 2", "[preprocess]") {
  // A 1x16 row, 100 everywhere but 200 at x = 4, to 1x8 (the height is not resized). Output i is
  // centred at 2i + 1 with support 4: taps 2i - 3 .. 2i + 4 with the cubic at (x - 2i - 0.5) / 2,
  // normalised: -0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625,
  // -0.01171875 (dyadic, so the int16 fixed point is exact).
  std::vector<int> v(16, 100);
  v[4] = 200;
  const Tensor r = vlm::data::resize_bicubic_aa(hwc(1, 16, 1, v), 1, 8);
  REQUIRE(r.shape() == Shape{1, 8, 1});
  CHECK(r.data()[2] == 143.0f);  // 100 + 100 · 0.43359375 = 143.36
  CHECK(r.data()[3] == 96.0f);   // 100 − 100 · 0.03515625 = 96.48: the negative lobe
  // The negative lobe below 0 is clamped, not wrapped: 255 · −0.03515625 < 0.
  std::vector<int> spike(16, 0);
  spike[4] = 255;
  const Tensor s = vlm::data::resize_bicubic_aa(hwc(1, 16, 1, spike), 1, 8);
  CHECK(s.data()[3] == 0.0f);
  CHECK(s.data()[2] == 111.0f);  // 255 · 0.43359375 = 110.57, rounded
}

TEST_CASE("bilinear antialiased resize: hand-computed triangle weights when upsampling", "[preprocess]") {
  // [0, 100] to 4 samples: centres 0.25, 0.75, 1.25, 1.75 (scale 0.5, support 1); the edge outputs
  // see one input only, the middle ones 0.75/0.25 and 0.25/0.75.
  const Tensor r = vlm::data::resize_bilinear_aa(hwc(1, 2, 1, {0, 100}), 1, 4);
  CHECK(as_ints(r) == std::vector<int>{0, 25, 75, 100});
  // Down by 2 (support 2): inside, the triangle weights 1/8, 3/8, 3/8, 1/8 give a ramp 10·x's
  // midpoints 25 and 45; at the edges the cut-off taps 0.75, 0.75, 0.25 are renormalised by 1.75:
  // (10·0.75 + 20·0.25) / 1.75 = 7.14 and (50·0.25 + 60·0.75 + 70·0.75) / 1.75 = 62.86.
  std::vector<int> ramp;
  for (int x = 0; x < 8; ++x) ramp.push_back(10 * x);
  CHECK(as_ints(vlm::data::resize_bilinear_aa(hwc(1, 8, 1, ramp), 1, 4)) == std::vector<int>{7, 25, 45, 63});
}

TEST_CASE("resize: a same-size resize is the identity; bad input is an error", "[preprocess]") {
  const Tensor img = vlm::data::image_to_tensor(random_image(7, 9, 3));
  CHECK(vlm::data::resize_bicubic_aa(img, 7, 9).to_vector() == img.to_vector());
  CHECK(vlm::data::resize_bilinear_aa(img, 7, 9).to_vector() == img.to_vector());
  // One axis at a time: only the width changes, so every row is resized alone.
  const Tensor w = vlm::data::resize_bicubic_aa(img, 7, 4);
  const Tensor row0 = vlm::data::resize_bicubic_aa(vlm::slice(img, 0, 0, 1).clone(), 1, 4);
  CHECK(std::vector<float>(w.data(), w.data() + 12) == row0.to_vector());
  CHECK_THROWS_WITH(vlm::data::resize_bicubic_aa(hwc(1, 2, 1, {0, 256}), 1, 1), Catch::Contains("8-bit"));
  CHECK_THROWS_WITH(vlm::data::resize_bilinear_aa(Tensor::full({1, 2, 1}, 0.5f), 1, 1), Catch::Contains("8-bit"));
  CHECK_THROWS_AS(vlm::data::resize_bilinear_aa(img, 0, 3), vlm::Error);
}

TEST_CASE("resize: bit-identical to torchvision's uint8 CPU resize (antialias=True)", "[preprocess]") {
  // tvF.resize(formula image as uint8 CHW, size, BICUBIC / BILINEAR, antialias=True), torchvision
  // 0.26 on an AVX-512 CPU, as HWC values.
  const Tensor down = vlm::data::image_to_tensor(formula_image(6, 9));
  const Tensor up = vlm::data::image_to_tensor(formula_image(3, 4));
  CHECK(as_ints(vlm::data::resize_bicubic_aa(down, 4, 5)) ==
        std::vector<int>{16,  87,  159, 37,  109, 194, 60,  133, 193, 84,  163, 134, 105, 189, 159, 72,  144, 213, 105, 178,
                         102, 148, 207, 90,  178, 140, 50,  217, 102, 83,  133, 221, 115, 190, 130, 54,  183, 44,  107, 213,
                         114, 104, 164, 60,  135, 188, 92,  68,  108, 72,  137, 131, 75,  149, 97,  88,  165, 27,  110, 181});
  CHECK(as_ints(vlm::data::resize_bilinear_aa(down, 4, 5)) ==
        std::vector<int>{21,  92,  163, 41,  112, 183, 65,  136, 185, 90,  161, 136, 110, 181, 156, 77,  148, 195, 108, 170,
                         106, 145, 188, 97,  176, 135, 62,  204, 106, 90,  135, 200, 118, 177, 134, 68,  176, 64,  107, 201,
                         112, 103, 166, 70,  131, 179, 95,  77,  114, 77,  130, 134, 75,  146, 99,  92,  163, 42,  106, 177});
  CHECK(as_ints(vlm::data::resize_bicubic_aa(up, 5, 7)) ==
        std::vector<int>{0,   67,  138, 0,   71,  142, 7,   78,  149, 14,  85,  156, 19,  90,  161, 26,  97,  168, 30,  101, 172,
                         11,  81,  152, 15,  86,  156, 23,  94,  165, 30,  101, 178, 37,  108, 191, 46,  117, 200, 50,  121, 203,
                         36,  107, 178, 41,  112, 183, 52,  123, 194, 61,  132, 203, 70,  141, 212, 81,  152, 223, 86,  157, 228,
                         61,  132, 203, 68,  139, 216, 80,  151, 228, 92,  163, 151, 103, 174, 76,  116, 187, 86,  123, 194, 99,
                         75,  146, 217, 83,  154, 235, 96,  167, 247, 109, 180, 114, 122, 193, 0,   135, 206, 0,   143, 214, 10});
  CHECK(as_ints(vlm::data::resize_bilinear_aa(up, 5, 7)) ==
        std::vector<int>{0,   71,  142, 4,   75,  146, 10,  81,  152, 17,  88,  159, 23,  94,  165, 29,  100, 171, 33,  104, 175,
                         15,  86,  157, 20,  91,  162, 27,  98,  169, 35,  106, 177, 42,  113, 184, 49,  120, 191, 54,  125, 196,
                         37,  108, 179, 43,  114, 185, 52,  123, 194, 61,  132, 203, 70,  141, 212, 79,  150, 221, 85,  156, 227,
                         59,  130, 201, 66,  137, 208, 77,  148, 219, 88,  159, 153, 98,  169, 87,  110, 181, 98,  116, 187, 105,
                         74,  145, 216, 81,  152, 223, 94,  165, 236, 106, 177, 120, 117, 188, 3,   130, 201, 16,  137, 208, 23});
}

TEST_CASE("center crop: HF's truncated offsets, zero padding when the crop is larger", "[preprocess]") {
  // 7x3, value 10·y + x. Crop 4x6: top = int((7 − 4) / 2) = 1 (Python's round would say 2); the
  // width 3 is padded to 6 with 1 column before and 2 after.
  std::vector<int> v;
  for (int y = 0; y < 7; ++y)
    for (int x = 0; x < 3; ++x) v.push_back(10 * y + x);
  const Tensor c = vlm::data::center_crop(hwc(7, 3, 1, v), 4, 6);
  REQUIRE(c.shape() == Shape{4, 6, 1});
  CHECK(as_ints(c) == std::vector<int>{0, 10, 11, 12, 0, 0, 0, 20, 21, 22, 0, 0,  //
                                       0, 30, 31, 32, 0, 0, 0, 40, 41, 42, 0, 0});
  // 5 wide to 2: left = int(3 / 2) = 1.
  const Tensor d = vlm::data::center_crop(hwc(1, 5, 1, {0, 1, 2, 3, 4}), 1, 2);
  CHECK(as_ints(d) == std::vector<int>{1, 2});
}

TEST_CASE("shortest_edge_size: the short side to the size, the long side truncated", "[preprocess]") {
  CHECK(vlm::data::shortest_edge_size(10, 13, 8) == std::pair<int64_t, int64_t>{8, 10});   // int(10.4)
  CHECK(vlm::data::shortest_edge_size(61, 40, 30) == std::pair<int64_t, int64_t>{45, 30});  // int(45.75)
  CHECK(vlm::data::shortest_edge_size(5, 5, 7) == std::pair<int64_t, int64_t>{7, 7});
}

TEST_CASE("rescale + normalize: CLIP constants, channels first, float32 as HF fuses it", "[preprocess]") {
  // One row of two pixels: (0, 128, 255) and (255, 0, 64).
  const Tensor t = vlm::data::rescale_normalize_chw(hwc(1, 2, 3, {0, 128, 255, 255, 0, 64}), 1.0 / 255.0,
                                                    {vlm::data::kOpenAiClipMean.begin(), vlm::data::kOpenAiClipMean.end()},
                                                    {vlm::data::kOpenAiClipStd.begin(), vlm::data::kOpenAiClipStd.end()});
  REQUIRE(t.shape() == Shape{3, 1, 2});
  const auto clip = [](double x, int c) {
    return (x / 255.0 - vlm::data::kOpenAiClipMean[static_cast<std::size_t>(c)]) /
           vlm::data::kOpenAiClipStd[static_cast<std::size_t>(c)];
  };
  CHECK(t.data()[0] == Approx(clip(0, 0)).margin(1e-6));    // c 0, x 0
  CHECK(t.data()[1] == Approx(clip(255, 0)).margin(1e-6));  // c 0, x 1
  CHECK(t.data()[2] == Approx(clip(128, 1)).margin(1e-6));  // c 1, x 0
  CHECK(t.data()[5] == Approx(clip(64, 2)).margin(1e-6));   // c 2, x 1
  // The constants themselves, and 0 exactly as transformers' float32 (IdeficsImageProcessor output).
  CHECK(t.data()[0] == Approx(-1.792262534).margin(1e-6));  // −0.48145466 / 0.26862954
  CHECK(t.data()[3] == Approx(-1.752097128).margin(1e-6));  // −0.4578275 / 0.26130258
  CHECK(t.data()[4] == Approx(2.145896989).margin(1e-6));   // (1 − 0.40821073) / 0.27577711
  CHECK(t.data()[0] == -1.7922626f);
  CHECK_THROWS_AS(vlm::data::rescale_normalize_chw(hwc(1, 1, 3, {0, 0, 0}), 1.0 / 255.0, {0.5}, {0.5}), vlm::Error);
}

// ---- llava: CLIPImageProcessor + LlavaProcessor ----

namespace {
const nlohmann::json kLlavaConfig = {{"model_type", "llava"},
                                     {"image_token_index", 3},
                                     {"vision_config", {{"image_size", 8}, {"patch_size", 2}}}};
}  // namespace

TEST_CASE("llava processor: CLIP pixels as transformers makes them", "[preprocess][llava]") {
  // CLIPImageProcessor(size {shortest_edge 8}, crop_size 8x8) on formula_image(10, 13): bicubic to
  // 8x10, center crop from column 1, CLIP normalize.
  const auto p = processor(kLlavaConfig);
  const Inputs in = p->make_inputs({MultimodalSample{{M}, {formula_image(10, 13)}}});
  const Tensor px = in.floats("pixel_values");
  REQUIRE(px.shape() == Shape{1, 3, 8, 8});
  for (const At3& r : {At3{0, 0, 0, -1.4710972f}, At3{0, 3, 5, -0.85796326f}, At3{1, 7, 2, 0.93429327f},
                       At3{2, 4, 7, -0.15775365f}, At3{2, 7, 7, 0.24040821f}, At3{1, 0, 6, 0.8742622f}}) {
    INFO("c " << r.c << " y " << r.y << " x " << r.x);
    CHECK(px.data()[(r.c * 8 + r.y) * 8 + r.x] == r.v);
  }
  // The same steps by hand from the shared helpers.
  Tensor t = vlm::data::resize_bicubic_aa(vlm::data::image_to_tensor(formula_image(10, 13)), 8, 10);
  t = vlm::data::center_crop(t, 8, 8);
  const Tensor ref = vlm::data::rescale_normalize_chw(
      t, 1.0 / 255.0, {vlm::data::kOpenAiClipMean.begin(), vlm::data::kOpenAiClipMean.end()},
      {vlm::data::kOpenAiClipStd.begin(), vlm::data::kOpenAiClipStd.end()});
  CHECK(px.to_vector() == ref.to_vector());
  // A black image is (0 − mean) / std in every pixel of each channel.
  const Tensor black = p->make_inputs({MultimodalSample{{M}, {Image(5, 3, {0, 0, 0})}}}).floats("pixel_values");
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < 64; ++i)
      CHECK(black.data()[c * 64 + i] ==
            Approx(-vlm::data::kOpenAiClipMean[static_cast<std::size_t>(c)] / vlm::data::kOpenAiClipStd[static_cast<std::size_t>(c)])
                .margin(1e-6));
}

TEST_CASE("llava processor: BOS, each marker expanded to the image tokens, left padding", "[preprocess][llava]") {
  const auto p = processor(kLlavaConfig);
  // (8/2)² = 16 patches, CLS dropped by the "default" strategy.
  const Inputs in = p->make_inputs({MultimodalSample{{10, M, 11}, {random_image(5, 7, 1)}},
                                    MultimodalSample{{12, 13}, {}}});
  const std::vector<int64_t> a = cat({{1, 10}, rep(16, 3), {11}});
  CHECK(in.shape("input_ids") == Shape{2, 19});
  CHECK(row(in, "input_ids", 0) == a);
  CHECK(row(in, "input_ids", 1) == rep(16, 0, {1, 12, 13}));
  CHECK(row(in, "attention_mask", 0) == rep(19, 1));
  CHECK(row(in, "attention_mask", 1) == cat({rep(16, 0), rep(3, 1)}));
  CHECK(in.shape("pixel_values") == Shape{1, 3, 8, 8});
  CHECK(p->image_cost(100, 30).visual_tokens == 16);
  CHECK(p->image_cost(100, 30).lm_tokens == 16);
  CHECK(p->image_cost(100, 30).height == 8);
  CHECK(p->image_cost(100, 30).width == 8);
  // "full" keeps CLS: 17 tokens per image.
  nlohmann::json full = kLlavaConfig;
  full["vision_feature_select_strategy"] = "full";
  const Inputs f = processor(full)->make_inputs({MultimodalSample{{M}, {random_image(4, 4, 2)}}});
  CHECK(row(f, "input_ids", 0) == cat({{1}, rep(17, 3)}));
  // Text only: no pixel_values.
  CHECK_FALSE(p->make_inputs({MultimodalSample{{12}, {}}}).has("pixel_values"));
}

TEST_CASE("llava processor: options and errors", "[preprocess][llava]") {
  // A shortest_edge of 16 resizes a 10x13 image to 16x20 before the 8x8 crop (rows 4..11, columns 6..13).
  const Tensor crop = vlm::data::center_crop(
      vlm::data::resize_bicubic_aa(vlm::data::image_to_tensor(formula_image(10, 13)), 16, 20), 8, 8);
  const Tensor clip = vlm::data::rescale_normalize_chw(
      crop, 1.0 / 255.0, {vlm::data::kOpenAiClipMean.begin(), vlm::data::kOpenAiClipMean.end()},
      {vlm::data::kOpenAiClipStd.begin(), vlm::data::kOpenAiClipStd.end()});
  const Tensor half = vlm::data::rescale_normalize_chw(crop, 1.0 / 255.0, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5});
  const Inputs in = processor(kLlavaConfig, {{"size", {{"shortest_edge", 16}}}})
                        ->make_inputs({MultimodalSample{{M}, {formula_image(10, 13)}}});
  CHECK(in.floats("pixel_values").to_vector() == clip.to_vector());
  const Inputs in2 = processor(kLlavaConfig, {{"shortest_edge", 16}, {"image_mean", 0.5}, {"image_std", {0.5, 0.5, 0.5}}})
                         ->make_inputs({MultimodalSample{{M}, {formula_image(10, 13)}}});
  CHECK(in2.floats("pixel_values").to_vector() == half.to_vector());
  expect_config_error(kLlavaConfig, {{"do_fancy_thing", true}}, "do_fancy_thing");
  expect_config_error(kLlavaConfig, {{"crop_size", {{"height", 6}, {"width", 8}}}}, "crop_size");
  expect_config_error(kLlavaConfig, {{"image_mean", {0.5, 0.5}}}, "image_mean");
  const auto p = processor(kLlavaConfig);
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{M, M}, {random_image(4, 4, 1)}}}),
                    Catch::Contains("more image markers"));
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{10}, {random_image(4, 4, 1)}}}),
                    Catch::Contains("1 image(s) but 0 image marker(s)"));
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{10, 3}, {}}}), Catch::Contains("image token"));
  CHECK_THROWS_AS(p->make_inputs({}), vlm::Error);
}

// ---- qwen2vl: Qwen2VLImageProcessor + Qwen2VLProcessor ----

namespace {
const nlohmann::json kQwenConfig = {
    {"model_type", "qwen2_vl"},
    {"image_token_id", 3},
    {"vision_start_token_id", 5},
    {"vision_end_token_id", 6},
    {"vision_config", {{"patch_size", 2}, {"spatial_merge_size", 2}, {"temporal_patch_size", 2}}}};
}  // namespace

TEST_CASE("qwen2vl smart_resize: round half to even, the max and min branches, the guards", "[preprocess][qwen2vl]") {
  const auto p = processor({{"model_type", "qwen2_vl"}});  // patch 14, merge 2: factor 28
  auto size = [&](int64_t h, int64_t w) {
    const vlm::ImageCost c = p->image_cost(h, w);
    return std::pair<int64_t, int64_t>{c.height, c.width};
  };
  // 70 / 28 = 2.5: Python's round gives 2 (56); std::round would give 3 (84).
  CHECK(size(70, 70) == std::pair<int64_t, int64_t>{56, 56});
  CHECK(p->image_cost(70, 70).visual_tokens == 4);  // (56/14)² / 2²
  CHECK(p->image_cost(70, 70).lm_tokens == 6);      // + vision_start, vision_end
  CHECK(size(42, 42) == std::pair<int64_t, int64_t>{56, 56});     // 1.5 rounds up to 2 either way
  CHECK(size(126, 98) == std::pair<int64_t, int64_t>{112, 112});  // 4.5 -> 4, 3.5 -> 4
  // Below min_pixels (3136): beta = sqrt(3136 / 600), sides ceil(side · beta / 28) · 28.
  CHECK(size(20, 30) == std::pair<int64_t, int64_t>{56, 84});
  CHECK(size(10, 2000) == std::pair<int64_t, int64_t>{28, 812});  // aspect 200 is still allowed
  CHECK_THROWS_WITH(p->image_cost(10, 2001), Catch::Contains("aspect ratio"));
  // Above max_pixels: beta = sqrt(h·w / max), sides floor(side / beta / 28) · 28, at least 28.
  const auto q = processor({{"model_type", "qwen2_vl"}}, {{"max_pixels", 78400}});
  CHECK(q->image_cost(1000, 2000).height == 196);
  CHECK(q->image_cost(1000, 2000).width == 392);
  CHECK(q->image_cost(1000, 2000).visual_tokens == 98);  // 14 · 28 / 4
  CHECK(q->image_cost(30, 5000).height == 28);           // floor(0.77) = 0, guarded to 28
  CHECK(q->image_cost(30, 5000).width == 3612);
  // size {shortest_edge, longest_edge} is the 5.17 spelling of the same bounds; min/max_pixels win.
  // 500x600 rounds to 504x588, over 78400: beta = sqrt(300000 / 78400), 9 · 28 x 10 · 28.
  const auto r = processor({{"model_type", "qwen2_vl"}}, {{"size", {{"shortest_edge", 3136}, {"longest_edge", 78400}}}});
  CHECK(r->image_cost(500, 600).height == 252);
  CHECK(r->image_cost(500, 600).width == 280);
  const auto s = processor({{"model_type", "qwen2_vl"}},
                           {{"size", {{"shortest_edge", 3136}, {"longest_edge", 78400}}}, {"max_pixels", 1003520}});
  CHECK(s->image_cost(500, 600).height == 504);
  CHECK(s->image_cost(500, 600).width == 588);
}

TEST_CASE("qwen2vl processor: merge-window rows, (c, t, py, px) columns", "[preprocess][qwen2vl]") {
  // patch 2, merge 2, temporal 2; an 8x12 image is already a multiple of 4 inside the pixel bounds,
  // so no resize: grid 4x6, 24 rows of 3·2·2·2 = 24 columns. Pixel values encode (c, y, x).
  const auto p = processor(kQwenConfig, {{"min_pixels", 16}, {"max_pixels", 10000}});
  auto value = [](int64_t c, int64_t y, int64_t x) {
    return c == 0 ? 16 * y + x : c == 1 ? 255 - (16 * y + x) : 3 * x + y;
  };
  Image im(8, 12);
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 12; ++x)
      for (int64_t c = 0; c < 3; ++c)
        im.pixels[static_cast<std::size_t>((y * 12 + x) * 3 + c)] = static_cast<uint8_t>(value(c, y, x));
  const Inputs in = p->make_inputs({MultimodalSample{{M}, {im}}});
  CHECK(in.ints("image_grid_thw") == std::vector<int64_t>{1, 4, 6});
  const Tensor px = in.floats("pixel_values");
  REQUIRE(px.shape() == Shape{24, 24});
  // Back to the 8-bit value each entry came from.
  auto raw = [&](int64_t r, int64_t k) {
    const auto c = static_cast<std::size_t>(k / 8);
    const double v = px.data()[r * 24 + k] * vlm::data::kOpenAiClipStd[c] * 255.0 + vlm::data::kOpenAiClipMean[c] * 255.0;
    return static_cast<int64_t>(std::lround(v));
  };
  // Hand-picked: row 1 is the patch right of row 0 (same merge window), row 2 the one below it,
  // row 4 the first patch of the next window; column 1 is px + 1, 2 is py + 1, 4 the second frame,
  // 8 the next channel.
  CHECK(raw(0, 0) == value(0, 0, 0));
  CHECK(raw(1, 0) == value(0, 0, 2));
  CHECK(raw(2, 0) == value(0, 2, 0));
  CHECK(raw(3, 0) == value(0, 2, 2));
  CHECK(raw(4, 0) == value(0, 0, 4));
  CHECK(raw(12, 0) == value(0, 4, 0));
  CHECK(raw(0, 1) == value(0, 0, 1));
  CHECK(raw(0, 2) == value(0, 1, 0));
  CHECK(raw(0, 4) == value(0, 0, 0));
  CHECK(raw(0, 8) == value(1, 0, 0));
  CHECK(raw(5, 23) == value(2, 1, 7));
  // Every entry: row r = ((bh · 3 + bw) · 2 + ih) · 2 + iw, column k = ((c · 2 + t) · 2 + py) · 2 + px.
  int wrong = 0;
  for (int64_t r = 0; r < 24; ++r)
    for (int64_t k = 0; k < 24; ++k) {
      const int64_t bh = r / 12, bw = (r % 12) / 4, ih = (r % 4) / 2, iw = r % 2;
      const int64_t c = k / 8, py = (k / 2) % 2, pxx = k % 2;
      const int64_t y = (bh * 2 + ih) * 2 + py, x = (bw * 2 + iw) * 2 + pxx;
      wrong += raw(r, k) != value(c, y, x) ? 1 : 0;
    }
  CHECK(wrong == 0);
}

TEST_CASE("qwen2vl processor: pixels as transformers makes them", "[preprocess][qwen2vl]") {
  // Qwen2VLImageProcessor(min_pixels 16, max_pixels 400, patch 2, merge 2, temporal 2) on
  // formula_image(9, 13): smart_resize -> 8x12 (bicubic), grid [1, 4, 6].
  const Inputs in = processor(kQwenConfig, {{"min_pixels", 16}, {"max_pixels", 400}})
                        ->make_inputs({MultimodalSample{{M}, {formula_image(9, 13)}}});
  CHECK(in.ints("image_grid_thw") == std::vector<int64_t>{1, 4, 6});
  const Tensor px = in.floats("pixel_values");
  REQUIRE(px.shape() == Shape{24, 24});
  const std::vector<std::tuple<int64_t, int64_t, float>> ref = {{0, 0, -1.7338688f},  {1, 5, -1.2083255f},
                                                                {5, 17, 1.463334f},   {7, 23, 0.58168983f},
                                                                {23, 9, -0.65653f},   {13, 12, -1.106763f}};
  for (const auto& [r, k, v] : ref) {
    INFO("row " << r << " column " << k);
    CHECK(px.data()[r * 24 + k] == v);
  }
}

TEST_CASE("qwen2vl processor: vision_start, image pads, vision_end; mm_token_type_ids; no BOS",
          "[preprocess][qwen2vl]") {
  const auto p = processor(kQwenConfig, {{"min_pixels", 16}, {"max_pixels", 10000}});
  // 8x12 -> grid 4x6 -> 6 pads; 8x8 -> grid 4x4 -> 4 pads.
  const Inputs in = p->make_inputs({MultimodalSample{{M, 10, M}, {random_image(8, 12, 1), random_image(8, 8, 2)}},
                                    MultimodalSample{{11, 12}, {}}});
  const std::vector<int64_t> a = cat({{5}, rep(6, 3), {6, 10, 5}, rep(4, 3), {6}});
  CHECK(in.shape("input_ids") == Shape{2, 15});
  CHECK(row(in, "input_ids", 0) == a);
  CHECK(row(in, "input_ids", 1) == rep(13, 0, {11, 12}));
  CHECK(row(in, "attention_mask", 1) == cat({rep(13, 0), rep(2, 1)}));
  CHECK(row(in, "mm_token_type_ids", 0) == cat({{0}, rep(6, 1), {0, 0, 0}, rep(4, 1), {0}}));
  CHECK(row(in, "mm_token_type_ids", 1) == rep(15, 0));
  CHECK(in.ints("image_grid_thw") == std::vector<int64_t>{1, 4, 6, 1, 4, 4});
  CHECK(in.shape("pixel_values") == Shape{40, 24});
  const Inputs text = p->make_inputs({MultimodalSample{{11}, {}}});
  CHECK_FALSE(text.has("pixel_values"));
  CHECK_FALSE(text.has("image_grid_thw"));
  CHECK(text.ints("mm_token_type_ids") == std::vector<int64_t>{0});
}

TEST_CASE("qwen2vl processor: options and errors", "[preprocess][qwen2vl]") {
  expect_config_error(kQwenConfig, {{"min_pixel", 16}}, "min_pixel");
  expect_config_error(kQwenConfig, {{"patch_size", 14}}, "patch_size");
  expect_config_error(kQwenConfig, {{"merge_size", 1}}, "merge_size");
  expect_config_error(kQwenConfig, {{"max_pixels", 0}}, "max_pixels");
  expect_config_error(kQwenConfig, {{"size", {{"height", 28}}}}, "size.height");
  CHECK_NOTHROW(processor(kQwenConfig, {{"patch_size", 2}, {"temporal_patch_size", 2}, {"merge_size", 2}}));
  const auto p = processor(kQwenConfig);
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{M}, {random_image(2, 500, 1)}}}),
                    Catch::Contains("aspect ratio"));
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{3}, {}}}), Catch::Contains("image pad"));
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{-2}, {}}}), Catch::Contains("text id -2"));
}

// ---- fuyu: FuyuImageProcessor + FuyuProcessor ----

namespace {
const nlohmann::json kFuyuConfig = {{"model_type", "fuyu"}, {"patch_size", 4}, {"image_token_id", 3}};
}  // namespace

TEST_CASE("fuyu processor: patches as transformers makes them", "[preprocess][fuyu]") {
  // FuyuImageProcessor(size 8x12, patch 4) on formula_image(14, 10): larger than the box, so
  // bilinear to (8, int(10 · 8/14) = 5), padded with 1 -> 8x8 after the crop to whole patches.
  const auto p = processor(kFuyuConfig, {{"size", {{"height", 8}, {"width", 12}}}});
  const Inputs in = p->make_inputs({MultimodalSample{{M}, {formula_image(14, 10)}}});
  const Tensor px = in.floats("image_patches");
  REQUIRE(px.shape() == Shape{4, 48});
  auto at = [&](int64_t c, int64_t y, int64_t x) {  // patch (y/4, x/4), flattened (py, px, c)
    return px.data()[((y / 4) * 2 + x / 4) * 48 + ((y % 4) * 4 + x % 4) * 3 + c];
  };
  for (const At3& r : {At3{0, 0, 0, -0.77254903f}, At3{1, 3, 4, 0.23137255f}, At3{2, 7, 2, 0.43529412f},
                       At3{0, 5, 5, -0.99215686f}, At3{1, 7, 7, -0.99215686f}}) {
    INFO("c " << r.c << " y " << r.y << " x " << r.x);
    CHECK(at(r.c, r.y, r.x) == r.v);
  }
  const vlm::ImageCost c = p->image_cost(14, 10);
  CHECK(c.visual_tokens == 4);
  CHECK(c.lm_tokens == 2 * 3 + 1);  // [image image newline] x 2, BOS
  CHECK(c.height == 8);
  CHECK(c.width == 8);
}

TEST_CASE("fuyu processor: each image's rows, newlines and BOS in place; left padding", "[preprocess][fuyu]") {
  const auto p = processor(kFuyuConfig, {{"size", {{"height", 8}, {"width", 12}}}});
  // 5x5 pads to 8x8: grid 2x2. 9x3 is taller than the box: (8, int(3 · 8/9) = 2), padded to 8x4: 2x1.
  const Inputs in = p->make_inputs({MultimodalSample{{10, M, 11, M}, {random_image(5, 5, 1), random_image(9, 3, 2)}},
                                    MultimodalSample{{12}, {}}});
  const std::vector<int64_t> a = {10, 3, 3, 4, 3, 3, 4, 1, 11, 3, 4, 3, 4, 1};
  CHECK(in.shape("input_ids") == Shape{2, 14});
  CHECK(row(in, "input_ids", 0) == a);
  CHECK(row(in, "input_ids", 1) == rep(12, 0, {1, 12}));  // text only: the tokenizer's BOS
  CHECK(row(in, "attention_mask", 1) == cat({rep(12, 0), {1, 1}}));
  const Tensor patches = in.floats("image_patches");
  REQUIRE(patches.shape() == Shape{6, 48});
  // The second image's patches follow the first's.
  const Tensor second =
      p->make_inputs({MultimodalSample{{M}, {random_image(9, 3, 2)}}}).floats("image_patches");
  CHECK(std::vector<float>(patches.data() + 4 * 48, patches.data() + 6 * 48) == second.to_vector());
  expect_config_error(kFuyuConfig, {{"patch_size", {{"height", 30}, {"width", 30}}}}, "patch_size");
  expect_config_error(kFuyuConfig, {{"target_size", 3}}, "target_size");
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{10, 3}, {}}}), Catch::Contains("image token"));
}

// ---- flamingo: IdeficsImageProcessor + IdeficsProcessor ----

namespace {
const nlohmann::json kIdeficsConfig = {{"model_type", "idefics"},
                                       {"vision_config", {{"image_size", 12}, {"patch_size", 3}}}};
}  // namespace

TEST_CASE("flamingo processor: pixels as transformers makes them", "[preprocess][flamingo]") {
  // IdeficsImageProcessor(image_size 12) on formula_image(10, 13): bicubic to 12x12, no crop.
  const Inputs in = processor(kIdeficsConfig)->make_inputs({MultimodalSample{{M}, {formula_image(10, 13)}}});
  const Tensor px = in.floats("pixel_values");
  REQUIRE(px.shape() == Shape{1, 1, 3, 12, 12});
  for (const At3& r : {At3{0, 0, 0, -1.7922626f}, At3{0, 3, 5, 1.1420212f}, At3{1, 11, 2, 1.0243399f},
                       At3{2, 4, 11, 0.82343096f}, At3{2, 7, 7, -0.05821318f}, At3{1, 0, 6, 0.34899035f}}) {
    INFO("c " << r.c << " y " << r.y << " x " << r.x);
    CHECK(px.data()[(r.c * 12 + r.y) * 12 + r.x] == r.v);
  }
}

TEST_CASE("flamingo processor: fake tokens around images, the image mask, zero-padded pixels",
          "[preprocess][flamingo]") {
  const auto p = processor(kIdeficsConfig);
  const std::vector<Image> three = {random_image(5, 6, 1), random_image(12, 12, 2), random_image(20, 9, 3)};
  const Inputs in = p->make_inputs({MultimodalSample{{M, M, 10, M, 11}, three},
                                    MultimodalSample{{12, M, 13, 2, 14}, {random_image(7, 7, 4)}}});
  // <fake><image><fake>, and <image><fake> right after another image.
  const std::vector<int64_t> a = {1, 7, 3, 7, 3, 7, 10, 7, 3, 7, 11};
  CHECK(in.shape("input_ids") == Shape{2, 11});
  CHECK(row(in, "input_ids", 0) == a);
  CHECK(row(in, "input_ids", 1) == std::vector<int64_t>{0, 0, 0, 1, 12, 7, 3, 7, 13, 2, 14});
  CHECK(row(in, "attention_mask", 1) == std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1});
  // Each token marks the latest <image> at or before it; nothing before the first image; nothing
  // after an EOS (id 2) that follows an image.
  REQUIRE(in.shape("image_attention_mask") == Shape{2, 11, 3});
  const std::vector<int64_t> mask_a = {0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0,
                                       0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1};
  const std::vector<int64_t> mask_b = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                                       1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0};
  CHECK(row(in, "image_attention_mask", 0) == mask_a);
  CHECK(row(in, "image_attention_mask", 1) == mask_b);
  // pixel_values [B, 3, 3, 12, 12]: sample 1's missing images are zeros; each image as processed alone.
  const Tensor px = in.floats("pixel_values");
  REQUIRE(px.shape() == Shape{2, 3, 3, 12, 12});
  const int64_t plane = 3 * 12 * 12;
  for (std::size_t k = 0; k < 3; ++k) {
    const Tensor alone = p->make_inputs({MultimodalSample{{M}, {three[k]}}}).floats("pixel_values");
    CHECK(std::vector<float>(px.data() + static_cast<int64_t>(k) * plane, px.data() + static_cast<int64_t>(k + 1) * plane) ==
          alone.to_vector());
  }
  CHECK(std::vector<float>(px.data() + 4 * plane, px.data() + 6 * plane) == std::vector<float>(2 * plane, 0.0f));
  // Text only: one all-zero image slot and an all-zero mask.
  const Inputs text = p->make_inputs({MultimodalSample{{10, 11}, {}}});
  CHECK(text.shape("pixel_values") == Shape{1, 1, 3, 12, 12});
  CHECK(text.ints("image_attention_mask") == std::vector<int64_t>(3, 0));
  CHECK(row(text, "input_ids", 0) == std::vector<int64_t>{1, 10, 11});
}

TEST_CASE("flamingo processor: image cost, options and errors", "[preprocess][flamingo]") {
  const vlm::ImageCost c = processor(kIdeficsConfig)->image_cost(100, 50);
  CHECK(c.visual_tokens == 17);  // (12/3)² patches + CLS
  CHECK(c.lm_tokens == 3);
  CHECK(c.height == 12);
  nlohmann::json resampled = kIdeficsConfig;
  resampled["use_resampler"] = true;
  resampled["perceiver_config"] = {{"resampler_n_latents", 5}};
  CHECK(processor(resampled)->image_cost(100, 50).visual_tokens == 5);
  CHECK_NOTHROW(processor(kIdeficsConfig, {{"image_size", 12}, {"size", {{"height", 12}, {"width", 12}}}}));
  expect_config_error(kIdeficsConfig, {{"image_size", 224}}, "image_size");
  expect_config_error(kIdeficsConfig, {{"size", {{"height", 12}, {"width", 10}}}}, "size.width");
  expect_config_error(kIdeficsConfig, {{"do_center_crop", true}}, "do_center_crop");
  const auto p = processor(kIdeficsConfig);
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{M}, {}}}), Catch::Contains("more image markers"));
  CHECK_THROWS_WITH(p->make_inputs({MultimodalSample{{3}, {}}}), Catch::Contains("<image> token"));
}

// ---- End to end: each processor's batch through a tiny model of its family ----

TEST_CASE("processors feed their family's model; a batch gives each sample's last-token logits",
          "[preprocess][e2e]") {
  struct Family {
    const char* name;
    nlohmann::json config, options;
  };
  const nlohmann::json text = {{"vocab_size", 40}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                               {"num_attention_heads", 4}, {"intermediate_size", 48}};
  nlohmann::json llama = text;
  llama["model_type"] = "llama";
  llama["num_key_value_heads"] = 2;
  nlohmann::json qwen_text = text;
  qwen_text["num_key_value_heads"] = 2;
  qwen_text["rope_parameters"] = {{"rope_type", "default"}, {"mrope_section", {2, 1, 1}}, {"rope_theta", 10000.0}};
  nlohmann::json fuyu = text;
  fuyu.update({{"model_type", "fuyu"}, {"patch_size", 4}, {"image_token_id", 3}, {"hidden_act", "relu2"}});
  nlohmann::json idefics = text;
  idefics.update({{"model_type", "idefics"},
                  {"alpha_initializer", "ones"},  // tanh(1): the cross-attention is not a no-op
                  {"use_resampler", true},
                  {"perceiver_config",
                   {{"resampler_depth", 1}, {"resampler_head_dim", 8}, {"resampler_n_heads", 2}, {"resampler_n_latents", 4}}},
                  {"vision_config",
                   {{"embed_dim", 32}, {"image_size", 12}, {"patch_size", 3}, {"num_hidden_layers", 2},
                    {"num_attention_heads", 4}, {"intermediate_size", 48}}}});
  const std::vector<Family> families = {
      {"llava",
       {{"model_type", "llava"},
        {"image_token_index", 3},
        {"vision_feature_layer", -1},
        {"text_config", llama},
        {"vision_config",
         {{"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"image_size", 12}, {"patch_size", 3}}}},
       nullptr},
      {"qwen2vl",
       {{"model_type", "qwen2_vl"},
        {"image_token_id", 3},
        {"vision_start_token_id", 5},
        {"vision_end_token_id", 6},
        {"text_config", qwen_text},
        {"vision_config",
         {{"depth", 2}, {"embed_dim", 16}, {"num_heads", 2}, {"hidden_size", 32}, {"mlp_ratio", 2}, {"patch_size", 2},
          {"spatial_merge_size", 2}, {"temporal_patch_size", 2}}}},
       {{"min_pixels", 16}, {"max_pixels", 400}}},
      {"fuyu", fuyu, nullptr},
      {"flamingo", idefics, nullptr},
  };
  // Two samples of different lengths and image counts and sizes.
  const std::vector<MultimodalSample> batch = {
      MultimodalSample{{10, M, 11, 12}, {random_image(10, 14, 1)}},
      MultimodalSample{{M, 13, M, 14, 15, 16, 17, 18}, {random_image(6, 6, 2), random_image(9, 13, 3)}}};
  for (const Family& f : families) {
    DYNAMIC_SECTION(f.name) {
      const vlm::io::HfConfig cfg(f.config, "config.json");
      vlm::Rng rng(11);
      const auto arch = vlm::make_architecture(cfg, rng);
      REQUIRE(arch->family() == f.name);
      const auto proc = vlm::family_for_config(cfg).make_processor(cfg, f.options, vlm::SpecialTokens{});
      vlm::NoGradGuard no_grad;
      const Inputs in = proc->make_inputs(batch);
      const Tensor logits = arch->forward(in).logits;
      const int64_t T = logits.dim(1), V = logits.dim(2);
      for (int64_t b = 0; b < 2; ++b) {
        INFO("sample " << b);
        CHECK(row(in, "attention_mask", b).back() == 1);  // left padding: every row ends in the last column
        const Inputs one = proc->make_inputs({batch[static_cast<std::size_t>(b)]});
        const Tensor alone = arch->forward(one).logits;
        const int64_t Tb = alone.dim(1);
        if (b == 0) CHECK(Tb < T);  // the short sample really is padded in the batch
        double diff = 0.0;
        for (int64_t v = 0; v < V; ++v)
          diff = std::max(diff, std::abs(static_cast<double>(logits.data()[(b * T + T - 1) * V + v]) -
                                         alone.data()[(Tb - 1) * V + v]));
        CHECK(diff <= 1e-5);
      }
    }
  }
}
