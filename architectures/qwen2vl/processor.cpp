// The Qwen2-VL processor as transformers 5.17 Qwen2VLProcessor + Qwen2VLImageProcessor (torchvision
// backend) make it (spec docs/architectures.md §3.2; models/qwen2_vl/
// {image_processing,processing}_qwen2_vl.py):
//   image: smart_resize to multiples of patch·merge within [min_pixels, max_pixels], bicubic
//   (antialiased), rescale 1/255, normalize with the OpenAI CLIP mean/std, repeat the single frame to
//   temporal_patch_size frames, flatten to rows in merge-window order (t, h/m, w/m, m, m) with columns
//   (c, t, py, px): pixel_values [Σ t·h·w, C·Tp·p·p], image_grid_thw [N_img, 3] in patches;
//   text: no BOS (the Qwen2 tokenizer adds none); each image marker becomes vision_start,
//   image_pad × t·h·w/m², vision_end; mm_token_type_ids is 1 on the image pads; rows left-padded.
#include "architectures/qwen2vl/qwen2vl.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

#include "architectures/processor_util.h"
#include "lib/data/resize.h"

namespace vlm::qwen2vl {

namespace {

struct Settings {
  int64_t patch = 14, temporal = 2, merge = 2;
  int64_t min_pixels = 56 * 56, max_pixels = 28 * 28 * 1280;
  Normalization norm;
  int64_t image_token_id = 151655, vision_start_token_id = 151652, vision_end_token_id = 151653;
  SpecialTokens tokens;
};

// smart_resize (image_processing_qwen2_vl.py, 5.17): both sides multiples of `factor`, the area in
// [min_pixels, max_pixels], the aspect ratio kept as well as that allows. Python's round() rounds
// half to even: std::nearbyint in the default rounding mode does the same (std::round would not).
std::pair<int64_t, int64_t> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels) {
  VLM_CHECK(height > 0 && width > 0, "qwen2vl processor: image size " << height << "x" << width
                                                                      << " must be positive");
  const double aspect = static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width));
  VLM_CHECK(!(aspect > 200.0), "qwen2vl processor: absolute aspect ratio must be smaller than 200, got "
                                   << aspect << " for an image of " << height << "x" << width);
  const auto f = static_cast<double>(factor);
  const auto h = static_cast<double>(height), w = static_cast<double>(width);
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(h / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(w / f)) * factor;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(static_cast<double>(height * width) / static_cast<double>(max_pixels));
    h_bar = std::max(factor, static_cast<int64_t>(std::floor(h / beta / f)) * factor);
    w_bar = std::max(factor, static_cast<int64_t>(std::floor(w / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / static_cast<double>(height * width));
    h_bar = static_cast<int64_t>(std::ceil(h * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(w * beta / f)) * factor;
  }
  VLM_CHECK(h_bar > 0 && w_bar > 0, "qwen2vl processor: image " << height << "x" << width << " resizes to "
                                                                << h_bar << "x" << w_bar);
  return {h_bar, w_bar};
}

Settings read_settings(const io::HfConfig& cfg, const nlohmann::json& options, const SpecialTokens& tokens) {
  // The model's own reader: the same keys and defaults as the model it feeds.
  const ImageInput image = image_input(cfg);
  const io::HfConfig vc = cfg.sub("vision_config");
  Settings s;
  s.tokens = tokens;
  s.patch = image.patch_size;
  s.temporal = image.temporal_patch_size;
  s.merge = image.spatial_merge_size;
  const char* channels_key = vc.has("in_channels") ? "in_channels" : "in_chans";
  if (image.in_channels != 3) vc.fail(channels_key, "the processor makes RGB images: must be 3");
  s.image_token_id = image.image_token_id;
  s.vision_start_token_id = image.vision_start_token_id;
  s.vision_end_token_id = cfg.get_int("vision_end_token_id", 151653);

  const io::HfConfig o = processor_options(
      options, "qwen2vl",
      {"min_pixels", "max_pixels", "size", "image_mean", "image_std", "rescale_factor", "patch_size",
       "temporal_patch_size", "merge_size"});
  // 5.17 keeps the bounds in size {shortest_edge, longest_edge} (older files: {min_pixels,
  // max_pixels}); min_pixels / max_pixels given on their own override it.
  if (o.has("size")) {
    const io::HfConfig size = o.sub("size");
    for (const auto& [key, value] : size.json().items())
      if (key != "shortest_edge" && key != "longest_edge" && key != "min_pixels" && key != "max_pixels")
        size.fail(key, "unknown key (shortest_edge, longest_edge)");
    s.min_pixels = size.get_int("shortest_edge", size.get_int("min_pixels", s.min_pixels));
    s.max_pixels = size.get_int("longest_edge", size.get_int("max_pixels", s.max_pixels));
  }
  s.min_pixels = o.get_int("min_pixels", s.min_pixels);
  s.max_pixels = o.get_int("max_pixels", s.max_pixels);
  if (s.min_pixels <= 0) o.fail("min_pixels", "must be positive");
  if (s.max_pixels <= 0) o.fail("max_pixels", "must be positive");
  // The vision tower's patch embedding fixes these; the processor may only repeat them.
  const std::pair<const char*, int64_t> fixed[] = {
      {"patch_size", s.patch}, {"temporal_patch_size", s.temporal}, {"merge_size", s.merge}};
  for (const auto& [key, value] : fixed)
    if (o.has(key) && o.get_int(key, value) != value) {
      std::ostringstream os;
      os << "must equal the model's vision_config value " << value;
      o.fail(key, os.str());
    }
  s.norm = read_normalization(o, data::kOpenAiClipMean, data::kOpenAiClipStd);
  return s;
}

class Qwen2VlProcessor final : public Processor {
 public:
  explicit Qwen2VlProcessor(Settings s) : s_(std::move(s)) {}

  Inputs make_inputs(const std::vector<MultimodalSample>& batch) const override {
    VLM_CHECK(!batch.empty(), "qwen2vl processor: empty batch");
    const int64_t m2 = s_.merge * s_.merge;
    std::vector<std::vector<int64_t>> rows, types;
    std::vector<float> pixels;
    std::vector<int64_t> grids;
    int64_t n_rows = 0;
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const MultimodalSample& sample = batch[b];
      std::vector<int64_t> row, type;
      std::size_t k = 0;
      for (const int64_t id : sample.ids) {
        if (id == kImageMarker) {
          VLM_CHECK(k < sample.images.size(), "qwen2vl processor: sample " << b << " has more image markers than its "
                                                                           << sample.images.size() << " image(s)");
          int64_t gh = 0, gw = 0;
          append_patches(sample.images[k++], pixels, gh, gw);
          grids.push_back(1);
          grids.push_back(gh);
          grids.push_back(gw);
          n_rows += gh * gw;
          const auto n = static_cast<std::size_t>(gh * gw / m2);
          row.push_back(s_.vision_start_token_id);
          row.resize(row.size() + n, s_.image_token_id);
          row.push_back(s_.vision_end_token_id);
          type.push_back(0);
          type.resize(type.size() + n, 1);
          type.push_back(0);
          continue;
        }
        VLM_CHECK(id >= 0 && id != s_.image_token_id,
                  "qwen2vl processor: sample " << b << " holds text id " << id
                                               << (id >= 0 ? " (the image pad: mark images with kImageMarker)" : ""));
        row.push_back(id);
        type.push_back(0);
      }
      VLM_CHECK(k == sample.images.size(), "qwen2vl processor: sample " << b << " has " << sample.images.size()
                                                                        << " image(s) but " << k << " image marker(s)");
      rows.push_back(std::move(row));
      types.push_back(std::move(type));
    }
    Inputs in = left_padded(rows, s_.tokens.pad, {{"mm_token_type_ids", &types}});
    if (!grids.empty()) {
      in.set_floats("pixel_values", {n_rows, 3 * s_.temporal * s_.patch * s_.patch}, std::move(pixels));
      in.set_ints("image_grid_thw", {static_cast<int64_t>(grids.size() / 3), 3}, grids);
    }
    return in;
  }

  ImageCost image_cost(int64_t height, int64_t width) const override {
    const auto [h, w] = smart_resize(height, width, s_.patch * s_.merge, s_.min_pixels, s_.max_pixels);
    const int64_t tokens = (h / s_.patch) * (w / s_.patch) / (s_.merge * s_.merge);
    return {tokens, tokens + 2, h, w};
  }

  std::vector<std::string> warnings(int64_t height, int64_t width) const override {
    // The size rounded to whole merged patches, as smart_resize makes it before min_pixels applies.
    const auto [rh, rw] = smart_resize(height, width, s_.patch * s_.merge, 1, s_.max_pixels);
    if (rh * rw >= s_.min_pixels) return {};
    const auto [h, w] = smart_resize(height, width, s_.patch * s_.merge, s_.min_pixels, s_.max_pixels);
    const int64_t tokens = (h / s_.patch) * (w / s_.patch) / (s_.merge * s_.merge);
    std::ostringstream os;
    os << "qwen2vl upscales a " << height << "x" << width << " image to " << h << "x" << w << " (" << tokens
       << " visual tokens) because it has fewer pixels than min_pixels " << s_.min_pixels
       << " (HF's default is 56x56 = 3136); [variant.processor] min_pixels = " << rh * rw << " keeps it at " << rh
       << "x" << rw << " (" << (rh / s_.patch) * (rw / s_.patch) / (s_.merge * s_.merge)
       << " visual tokens), its size rounded to multiples of " << s_.patch * s_.merge;
    return {os.str()};
  }

 private:
  // One image's rows of pixel_values appended to `out`; its grid (in patches) in gh, gw.
  void append_patches(const data::Image& image, std::vector<float>& out, int64_t& gh, int64_t& gw) const {
    Tensor t = data::image_to_tensor(image);
    const auto [h, w] = smart_resize(image.height, image.width, s_.patch * s_.merge, s_.min_pixels, s_.max_pixels);
    t = data::resize_bicubic_aa(t, h, w);
    const Tensor chw = normalize_chw(t, s_.norm);  // [3, h, w]
    const int64_t p = s_.patch, m = s_.merge, Tp = s_.temporal, C = 3;
    gh = h / p;
    gw = w / p;
    // reshape(t, Tp, C, gh/m, m, p, gw/m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8): one row per patch
    // in merge-window order, columns (c, t, py, px); the Tp frames are the same image.
    const float* src = chw.data();
    const int64_t cols = C * Tp * p * p;
    const std::size_t base = out.size();
    out.resize(base + static_cast<std::size_t>(gh * gw * cols));
    float* dst = out.data() + base;
    for (int64_t bh = 0; bh < gh / m; ++bh)
      for (int64_t bw = 0; bw < gw / m; ++bw)
        for (int64_t ih = 0; ih < m; ++ih)
          for (int64_t iw = 0; iw < m; ++iw) {
            const int64_t y0 = (bh * m + ih) * p, x0 = (bw * m + iw) * p;
            for (int64_t c = 0; c < C; ++c)
              for (int64_t tt = 0; tt < Tp; ++tt)
                for (int64_t py = 0; py < p; ++py) {
                  std::copy_n(src + (c * h + y0 + py) * w + x0, p, dst);
                  dst += p;
                }
          }
  }

  Settings s_;
};

}  // namespace

std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens) {
  return std::make_unique<Qwen2VlProcessor>(read_settings(model_config, options, tokens));
}

}  // namespace vlm::qwen2vl
