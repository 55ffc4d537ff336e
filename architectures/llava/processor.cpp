// The LLaVA processor as transformers 5.17 LlavaProcessor + CLIPImageProcessor (torchvision backend)
// make it (spec docs/architectures.md §1.4, §1.7; models/llava/processing_llava.py,
// models/clip/image_processing_clip.py, image_processing_backends.py):
//   image: shortest edge to size.shortest_edge (bicubic, antialiased), center crop to crop_size,
//   rescale 1/255 and normalize with the OpenAI CLIP mean/std -> pixel_values [N_img, 3, H, W];
//   text: BOS (the Llama tokenizer adds it), then the sample's ids with each image marker expanded to
//   num_image_tokens = (H/p)·(W/p) + 1 (CLS) − 1 if vision_feature_select_strategy is "default"
//   copies of the config's image token; rows left-padded with the pad id, attention_mask 0.
// Defaults come from the model config: shortest_edge = crop = vision_config.image_size.
#include "architectures/llava/llava.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

#include "architectures/processor_util.h"
#include "lib/data/resize.h"

namespace vlm::llava {

namespace {

struct Settings {
  int64_t shortest_edge = 0, crop_h = 0, crop_w = 0, patch = 0;
  Normalization norm;
  int64_t num_image_tokens = 0;
  int64_t image_token_id = 0;
  SpecialTokens tokens;
};

Settings read_settings(const io::HfConfig& cfg, const nlohmann::json& options, const SpecialTokens& tokens) {
  // The model's own reader: the same keys and defaults as the model it feeds.
  const ImageInput image = image_input(cfg);
  const int64_t image_size = image.image_size;
  if (image.num_channels != 3)
    cfg.sub("vision_config").fail("num_channels", "the processor makes RGB images: must be 3");
  const bool keep_cls = image.keep_cls;
  const int64_t patch = image.patch_size;

  Settings s;
  s.tokens = tokens;
  s.patch = patch;
  s.image_token_id = image.image_token_id;
  const io::HfConfig o = processor_options(
      options, "llava",
      {"size", "shortest_edge", "crop_size", "image_mean", "image_std", "rescale_factor"});
  s.shortest_edge = image_size;
  if (o.has("size")) {
    const io::HfConfig size = o.sub("size");
    for (const auto& [key, value] : size.json().items())
      if (key != "shortest_edge") size.fail(key, "CLIPImageProcessor resizes by shortest_edge only");
    s.shortest_edge = size.get_int("shortest_edge", s.shortest_edge);
  }
  s.shortest_edge = o.get_int("shortest_edge", s.shortest_edge);
  if (s.shortest_edge <= 0) o.fail("shortest_edge", "must be positive");
  s.crop_h = s.crop_w = image_size;
  if (o.has("crop_size")) {
    if (o.json().at("crop_size").is_number()) {
      s.crop_h = s.crop_w = o.get_int("crop_size", image_size);
    } else {
      const io::HfConfig crop = o.sub("crop_size");
      for (const auto& [key, value] : crop.json().items())
        if (key != "height" && key != "width") crop.fail(key, "unknown key (height, width)");
      s.crop_h = crop.get_int("height", image_size);
      s.crop_w = crop.get_int("width", image_size);
    }
    // The CLIP tower has position embeddings for image_size² pixels only.
    if (s.crop_h != image_size || s.crop_w != image_size) {
      std::ostringstream os;
      os << s.crop_h << "x" << s.crop_w << " differs from vision_config.image_size " << image_size
         << " (the CLIP tower's position embeddings fix the input size)";
      o.fail("crop_size", os.str());
    }
  }
  s.norm = read_normalization(o, data::kOpenAiClipMean, data::kOpenAiClipStd);
  s.num_image_tokens = (s.crop_h / patch) * (s.crop_w / patch) + (keep_cls ? 1 : 0);
  return s;
}

class LlavaProcessor final : public Processor {
 public:
  explicit LlavaProcessor(Settings s) : s_(std::move(s)) {}

  Inputs make_inputs(const std::vector<MultimodalSample>& batch) const override {
    VLM_CHECK(!batch.empty(), "llava processor: empty batch");
    std::vector<std::vector<int64_t>> rows;
    std::vector<float> pixels;
    int64_t n_images = 0;
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const MultimodalSample& sample = batch[b];
      std::vector<int64_t> row = {s_.tokens.bos};
      std::size_t k = 0;
      for (const int64_t id : sample.ids) {
        if (id == kImageMarker) {
          VLM_CHECK(k < sample.images.size(), "llava processor: sample " << b << " has more image markers than its "
                                                                         << sample.images.size() << " image(s)");
          row.insert(row.end(), static_cast<std::size_t>(s_.num_image_tokens), s_.image_token_id);
          const Tensor p = pixel_values(sample.images[k++]);
          pixels.insert(pixels.end(), p.data(), p.data() + p.numel());
          ++n_images;
          continue;
        }
        VLM_CHECK(id >= 0 && id != s_.image_token_id,
                  "llava processor: sample " << b << " holds text id " << id
                                             << (id >= 0 ? " (the image token: mark images with kImageMarker)" : ""));
        row.push_back(id);
      }
      VLM_CHECK(k == sample.images.size(), "llava processor: sample " << b << " has " << sample.images.size()
                                                                      << " image(s) but " << k << " image marker(s)");
      rows.push_back(std::move(row));
    }
    Inputs in = left_padded(rows, s_.tokens.pad);
    if (n_images > 0) in.set_floats("pixel_values", {n_images, 3, s_.crop_h, s_.crop_w}, std::move(pixels));
    return in;
  }

  ImageCost image_cost(int64_t height, int64_t width) const override {
    VLM_CHECK(height > 0 && width > 0, "llava processor: image size " << height << "x" << width << " must be positive");
    return {s_.num_image_tokens, s_.num_image_tokens, s_.crop_h, s_.crop_w};
  }

  std::vector<std::string> warnings(int64_t height, int64_t width) const override {
    std::vector<std::string> out;
    const auto [h, w] = data::shortest_edge_size(height, width, s_.shortest_edge);
    const int64_t kh = std::min(h, s_.crop_h), kw = std::min(w, s_.crop_w);
    if (kh < h || kw < w) {
      std::ostringstream os;
      os << "llava resizes a " << height << "x" << width << " image to " << h << "x" << w
         << " (shortest edge) and centre-crops it to " << s_.crop_h << "x" << s_.crop_w << ": only the middle "
         << std::lround(100.0 * static_cast<double>(kh * kw) / static_cast<double>(h * w))
         << "% of it is seen, its " << (kw < w ? "left and right" : "top and bottom") << " ends are cut";
      out.push_back(os.str());
    }
    if (s_.crop_h % s_.patch != 0 || s_.crop_w % s_.patch != 0) {
      std::ostringstream os;
      os << "llava's " << s_.crop_h << "x" << s_.crop_w << " input is not a multiple of patch_size " << s_.patch
         << ": the patches cover " << s_.crop_h / s_.patch * s_.patch << "x" << s_.crop_w / s_.patch * s_.patch
         << " and the last " << s_.crop_h % s_.patch << " rows / " << s_.crop_w % s_.patch
         << " columns of pixels are never seen";
      out.push_back(os.str());
    }
    return out;
  }

 private:
  // CLIPImageProcessor: [3, crop_h, crop_w].
  Tensor pixel_values(const data::Image& image) const {
    Tensor t = data::image_to_tensor(image);
    const auto [h, w] = data::shortest_edge_size(image.height, image.width, s_.shortest_edge);
    t = data::resize_bicubic_aa(t, h, w);
    t = data::center_crop(t, s_.crop_h, s_.crop_w);
    return normalize_chw(t, s_.norm);
  }

  Settings s_;
};

}  // namespace

std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens) {
  return std::make_unique<LlavaProcessor>(read_settings(model_config, options, tokens));
}

}  // namespace vlm::llava
