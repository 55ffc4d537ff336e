// The Fuyu processor as transformers 5.17 FuyuProcessor + FuyuImageProcessor make it (spec
// docs/architectures.md §2.2; models/fuyu/{image_processing,processing}_fuyu.py), on top
// of preprocess.h:
//   image: resize only if larger than the size box (bilinear, aspect kept), pad to whole patches with
//   padding_value, rescale/normalize to [-1, 1], patches in row-major grid order flattened (py, px, c)
//   -> image_patches [Σ patches, p·p·3] (all images of the batch, in order);
//   text: each image marker becomes its replace_image_token text, [image × grid_w, newline] × grid_h
//   then BOS, in place; a sample without images gets the tokenizer's BOS before its text. Rows are
//   left-padded (FuyuProcessor always pads left).
// Not added: the <0x04> beginning-of-answer token FuyuProcessor appends to each prompt; a vlmlab
// vocabulary has no such token (SpecialTokens), so the text ids carry whatever the task wants there.
#include "architectures/fuyu/fuyu.h"

#include <algorithm>
#include <sstream>

#include "architectures/fuyu/preprocess.h"
#include "architectures/processor_util.h"
#include "lib/data/resize.h"

namespace vlm::fuyu {

namespace {

// A scalar option that HF may also write as one number per channel (all equal here: Fuyu
// normalizes every channel alike).
double channel_scalar(const io::HfConfig& o, const std::string& key, double fallback) {
  if (!o.has(key)) return fallback;
  const nlohmann::json& v = o.json().at(key);
  if (v.is_number()) return v.get<double>();
  if (v.is_array() && v.size() == 3 && std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_number(); }) &&
      v[0] == v[1] && v[1] == v[2])
    return v[0].get<double>();
  o.fail(key, "expected a number (or 3 equal numbers), got " + io::short_dump(v));
}

struct Settings {
  ImageProcessorOptions image;
  PromptTokens tok;
  int64_t channels = 3;
};

Settings read_settings(const io::HfConfig& cfg, const nlohmann::json& options, const SpecialTokens& tokens) {
  // The model's own reader: the same keys and defaults as the model it feeds.
  const ImageInput model = image_input(cfg);
  Settings s;
  const int64_t patch = model.patch_size;
  if (model.num_channels != 3) cfg.fail("num_channels", "the processor makes RGB images: must be 3");
  s.image.patch_height = s.image.patch_width = patch;
  s.tok.image_token_id = model.image_token_id;
  s.tok.newline_id = tokens.newline;
  s.tok.bos_id = tokens.bos;
  s.tok.pad_id = tokens.pad;

  const io::HfConfig o = processor_options(
      options, "fuyu",
      {"size", "do_resize", "do_pad", "padding_value", "rescale_factor", "image_mean", "image_std",
       "patch_size"});
  if (o.has("size")) {
    const io::HfConfig size = o.sub("size");
    for (const auto& [key, value] : size.json().items())
      if (key != "height" && key != "width") size.fail(key, "unknown key (height, width)");
    s.image.target_height = size.get_int("height", s.image.target_height);
    s.image.target_width = size.get_int("width", s.image.target_width);
    if (s.image.target_height <= 0 || s.image.target_width <= 0) o.fail("size", "height and width must be positive");
  }
  if (o.has("patch_size")) {  // vision_embed_tokens fixes it; the processor may only repeat it
    const io::HfConfig ps = o.sub("patch_size");
    for (const auto& [key, value] : ps.json().items())
      if ((key != "height" && key != "width") || ps.get_int(key, patch) != patch) {
        std::ostringstream os;
        os << "must be {height: " << patch << ", width: " << patch << "} (the model's patch_size)";
        o.fail("patch_size", os.str());
      }
  }
  s.image.do_resize = o.get_bool("do_resize", s.image.do_resize);
  s.image.do_pad = o.get_bool("do_pad", s.image.do_pad);
  s.image.padding_value = o.get_double("padding_value", s.image.padding_value);
  s.image.rescale_factor = o.get_double("rescale_factor", s.image.rescale_factor);
  if (!(s.image.rescale_factor > 0.0)) o.fail("rescale_factor", "must be positive");
  s.image.image_mean = channel_scalar(o, "image_mean", s.image.image_mean);
  s.image.image_std = channel_scalar(o, "image_std", s.image.image_std);
  if (s.image.image_std == 0.0) o.fail("image_std", "must not be 0");
  return s;
}

class FuyuProcessor final : public Processor {
 public:
  explicit FuyuProcessor(Settings s) : s_(std::move(s)) {}

  Inputs make_inputs(const std::vector<MultimodalSample>& batch) const override {
    VLM_CHECK(!batch.empty(), "fuyu processor: empty batch");
    std::vector<std::vector<int64_t>> rows;
    std::vector<float> patches;
    int64_t n_patches = 0;
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const MultimodalSample& sample = batch[b];
      std::vector<int64_t> row;
      if (sample.images.empty()) row.push_back(s_.tok.bos_id);  // text only: the tokenizer's BOS
      std::size_t k = 0;
      for (const int64_t id : sample.ids) {
        if (id == kImageMarker) {
          VLM_CHECK(k < sample.images.size(), "fuyu processor: sample " << b << " has more image markers than its "
                                                                        << sample.images.size() << " image(s)");
          const ProcessedImage p = preprocess_image(data::image_to_tensor(sample.images[k++]), s_.image);
          const std::vector<int64_t> layout = image_prompt_ids(p.grid_h, p.grid_w, s_.tok);
          row.insert(row.end(), layout.begin(), layout.end());
          row.push_back(s_.tok.bos_id);
          patches.insert(patches.end(), p.patches.data(), p.patches.data() + p.patches.numel());
          n_patches += p.patches.dim(0);
          continue;
        }
        VLM_CHECK(id >= 0 && id != s_.tok.image_token_id,
                  "fuyu processor: sample " << b << " holds text id " << id
                                            << (id >= 0 ? " (the image token: mark images with kImageMarker)" : ""));
        row.push_back(id);
      }
      VLM_CHECK(k == sample.images.size(), "fuyu processor: sample " << b << " has " << sample.images.size()
                                                                     << " image(s) but " << k << " image marker(s)");
      rows.push_back(std::move(row));
    }
    Inputs in = left_padded(rows, s_.tok.pad_id);
    if (n_patches > 0) {
      const int64_t dim = s_.image.patch_height * s_.image.patch_width * s_.channels;
      in.set_floats("image_patches", {n_patches, dim}, std::move(patches));
    }
    return in;
  }

  // Visual tokens: the patches; LM tokens: the replacement text (rows with their newlines, then BOS).
  ImageCost image_cost(int64_t height, int64_t width) const override {
    const ImageGeometry g = image_geometry(height, width, s_.image);
    return {g.grid_h * g.grid_w, g.grid_h * (g.grid_w + 1) + 1, g.padded_h, g.padded_w};
  }

 private:
  Settings s_;
};

}  // namespace

std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens) {
  return std::make_unique<FuyuProcessor>(read_settings(model_config, options, tokens));
}

}  // namespace vlm::fuyu
