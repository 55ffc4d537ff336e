// The flamingo (IDEFICS) processor as transformers 5.17 IdeficsProcessor + IdeficsImageProcessor
// (torchvision backend) make it (spec docs/flamingo.md §4.3;
// models/idefics/{processing,image_processing}_idefics.py):
//   image: resize to image_size x image_size (bicubic, antialiased, no crop), rescale 1/255, normalize
//   with IDEFICS_STANDARD_MEAN / _STD (the OpenAI CLIP values) -> pixel_values [B, N_max, 3, S, S],
//   N_max = max(1, most images in a sample), zeros where a sample has fewer;
//   text: BOS, then the sample's ids; an image marker becomes <fake_token_around_image> <image>
//   <fake_token_around_image>, or <image> <fake_token_around_image> right after another image (the
//   two share the fake token between them); rows left-padded;
//   image_attention_mask [B, T, N_max]: each token marks the most recent <image> at or before it
//   (image_attention_mask_for_packed_input_ids: none before the first image, none after an EOS that
//   follows an image until the next one), one-hot over the batch's N_max.
#include "architectures/flamingo/flamingo.h"

#include <algorithm>
#include <array>
#include <iomanip>
#include <sstream>

#include "architectures/processor_util.h"
#include "lib/data/resize.h"

namespace vlm::flamingo {

namespace {

struct Settings {
  int64_t image_size = 224, patch = 14;
  Normalization norm;
  int64_t image_states = 0;  // cross-attention keys per image: resampler latents or CLS + patches
  SpecialTokens tokens;
};

Settings read_settings(const io::HfConfig& cfg, const nlohmann::json& options, const SpecialTokens& tokens) {
  // The model's own reader: the same keys and defaults as the model it feeds.
  const ImageInput image = image_input(cfg);
  Settings s;
  s.tokens = tokens;
  s.image_size = image.image_size;
  s.patch = image.patch_size;
  if (image.num_channels != 3)
    cfg.sub("vision_config").fail("num_channels", "the processor makes RGB images: must be 3");
  s.image_states = image.image_states;

  const io::HfConfig o = processor_options(
      options, "flamingo",
      {"image_size", "size", "image_mean", "image_std", "rescale_factor"});
  // The CLIP tower's position embeddings fix the input size; the options may only repeat it.
  auto check_size = [&](const io::HfConfig& where, const std::string& key, int64_t value) {
    if (value == s.image_size) return;
    std::ostringstream os;
    os << value << " differs from vision_config.image_size " << s.image_size
       << " (the vision tower's position embeddings fix the input size)";
    where.fail(key, os.str());
  };
  if (o.has("size")) {
    const io::HfConfig size = o.sub("size");
    for (const auto& [key, value] : size.json().items()) {
      if (key != "height" && key != "width") size.fail(key, "unknown key (height, width)");
      check_size(size, key, size.get_int(key, s.image_size));
    }
  }
  if (o.has("image_size")) check_size(o, "image_size", o.get_int("image_size", s.image_size));
  s.norm = read_normalization(o, data::kOpenAiClipMean, data::kOpenAiClipStd);
  return s;
}

class FlamingoProcessor final : public Processor {
 public:
  explicit FlamingoProcessor(Settings s) : s_(std::move(s)) {}

  Inputs make_inputs(const std::vector<MultimodalSample>& batch) const override {
    VLM_CHECK(!batch.empty(), "flamingo processor: empty batch");
    const SpecialTokens& tok = s_.tokens;
    std::vector<std::vector<int64_t>> rows;
    std::vector<std::vector<Tensor>> images(batch.size());
    std::size_t n_max = 1;  // "max_num_images has to be at least 1 even when there are no images"
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const MultimodalSample& sample = batch[b];
      std::vector<int64_t> row = {tok.bos};
      bool last_was_image = false;
      for (const int64_t id : sample.ids) {
        if (id == kImageMarker) {
          VLM_CHECK(images[b].size() < sample.images.size(), "flamingo processor: sample "
                                                                 << b << " has more image markers than its "
                                                                 << sample.images.size() << " image(s)");
          if (!last_was_image) row.push_back(tok.image_around);
          row.push_back(tok.image);
          row.push_back(tok.image_around);
          images[b].push_back(pixel_values(sample.images[images[b].size()]));
          last_was_image = true;
          continue;
        }
        VLM_CHECK(id >= 0 && id != tok.image,
                  "flamingo processor: sample " << b << " holds text id " << id
                                                << (id >= 0 ? " (the <image> token: mark images with kImageMarker)"
                                                            : ""));
        row.push_back(id);
        last_was_image = false;
      }
      VLM_CHECK(images[b].size() == sample.images.size(), "flamingo processor: sample "
                                                              << b << " has " << sample.images.size()
                                                              << " image(s) but " << images[b].size()
                                                              << " image marker(s)");
      n_max = std::max(n_max, images[b].size());
      rows.push_back(std::move(row));
    }
    const auto B = static_cast<int64_t>(rows.size());
    Inputs in = left_padded(rows, tok.pad);
    const auto T = static_cast<std::size_t>(in.shape("input_ids")[1]);
    const std::vector<int64_t> ids = in.ints("input_ids");

    // image_attention_mask_for_packed_input_ids over the padded ids, then incremental_to_binary.
    const auto N = static_cast<int64_t>(n_max);
    std::vector<int64_t> image_mask(static_cast<std::size_t>(B) * T * n_max, 0);
    for (int64_t b = 0; b < B; ++b) {
      int64_t count = -1;
      bool seen_eod = false;
      for (std::size_t t = 0; t < T; ++t) {
        const int64_t id = ids[static_cast<std::size_t>(b) * T + t];
        if (id == tok.image) {
          ++count;
          seen_eod = false;
        }
        const int64_t current = seen_eod ? -1 : count;
        if (current >= 0 && current < N) image_mask[(static_cast<std::size_t>(b) * T + t) * n_max + current] = 1;
        if (id == tok.eos) seen_eod = true;
      }
    }

    const int64_t S = s_.image_size, plane = 3 * S * S;
    std::vector<float> pixels(static_cast<std::size_t>(B * N * plane), 0.0f);
    for (std::size_t b = 0; b < images.size(); ++b)
      for (std::size_t k = 0; k < images[b].size(); ++k)
        std::copy_n(images[b][k].data(), plane, pixels.begin() + static_cast<int64_t>(b * n_max + k) * plane);

    in.set_floats("pixel_values", {B, N, 3, S, S}, std::move(pixels));
    in.set_ints("image_attention_mask", {B, static_cast<int64_t>(T), N}, image_mask);
    return in;
  }

  // Visual tokens: the cross-attention keys of one image; LM tokens: <fake> <image> <fake>.
  ImageCost image_cost(int64_t height, int64_t width) const override {
    VLM_CHECK(height > 0 && width > 0, "flamingo processor: image size " << height << "x" << width
                                                                         << " must be positive");
    return {s_.image_states, 3, s_.image_size, s_.image_size};
  }

  std::vector<std::string> warnings(int64_t height, int64_t width) const override {
    std::vector<std::string> out;
    if (height != width) {
      std::ostringstream os;
      os << "flamingo resizes a " << height << "x" << width << " image to " << s_.image_size << "x" << s_.image_size
         << " without keeping its aspect ratio: it is squeezed " << std::fixed << std::setprecision(1)
         << static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width)) << " times along its "
         << (width > height ? "width" : "height");
      out.push_back(os.str());
    }
    if (s_.image_size % s_.patch != 0) {
      std::ostringstream os;
      os << "flamingo's " << s_.image_size << "x" << s_.image_size << " input is not a multiple of patch_size "
         << s_.patch << ": the patches cover " << s_.image_size / s_.patch * s_.patch << "x"
         << s_.image_size / s_.patch * s_.patch << " and the last " << s_.image_size % s_.patch
         << " rows and columns of pixels are never seen";
      out.push_back(os.str());
    }
    return out;
  }

 private:
  // IdeficsImageProcessor: [3, S, S].
  Tensor pixel_values(const data::Image& image) const {
    const Tensor t = data::resize_bicubic_aa(data::image_to_tensor(image), s_.image_size, s_.image_size);
    return normalize_chw(t, s_.norm);
  }

  Settings s_;
};

}  // namespace

std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens) {
  return std::make_unique<FlamingoProcessor>(read_settings(model_config, options, tokens));
}

}  // namespace vlm::flamingo
