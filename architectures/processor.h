// A family's HF processor: from task samples (token ids with image markers, raw RGB images) to the
// model's Inputs, and the special token ids a vlmlab vocabulary reserves for it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "architectures/inputs.h"
#include "lib/data/image.h"
#include "lib/io/hf_config.h"

namespace vlm {

// The token ids a vlmlab vocabulary reserves. A family's config (built from sizes) points its own
// special ids (image_token_id, vision_start_token_id, ...) at these.
struct SpecialTokens {
  int64_t pad = 0, bos = 1, eos = 2;
  int64_t image = 3;         // llava <image>, fuyu |SPEAKER|, qwen2vl <|image_pad|>, idefics <image>
  int64_t newline = 4;       // fuyu |NEWLINE|
  int64_t vision_start = 5;  // qwen2vl <|vision_start|>
  int64_t vision_end = 6;    // qwen2vl <|vision_end|>
  int64_t image_around = 7;  // idefics <fake_token_around_image>
  static constexpr int64_t kCount = 8;  // task words start here
  // A family's own special tokens (FamilyEntry::own_tokens) by name, with their ids: they come after
  // every task word, so adding one moves no other family's ids (nor its own task words').
  std::map<std::string, int64_t> own;
};

// Stands for "the next image" in MultimodalSample::ids.
inline constexpr int64_t kImageMarker = -1;

// One sample before its family's processor: text token ids (no BOS/EOS; the processor adds what
// its tokenizer adds) with kImageMarker where each image goes, and the raw RGB images in order.
struct MultimodalSample {
  std::vector<int64_t> ids;
  std::vector<data::Image> images;
};

// What one image costs: visual tokens (rows the image becomes before the LM: spliced tokens, or the
// cross-attention context for flamingo) and the LM sequence positions it takes.
struct ImageCost {
  int64_t visual_tokens = 0;
  int64_t lm_tokens = 0;
  int64_t height = 0, width = 0;  // the size the model sees after preprocessing
};

// A family's HF processor: image preprocessing from raw RGB and the prompt layout.
class Processor {
 public:
  virtual ~Processor() = default;
  // Model inputs for a batch (the names and layouts Architecture::forward reads), rows left-padded
  // with pad ids / attention_mask 0, so every row's last token is in the last column.
  virtual Inputs make_inputs(const std::vector<MultimodalSample>& batch) const = 0;
  virtual ImageCost image_cost(int64_t height, int64_t width) const = 0;
  // What this processor does to a height x width image that its user may not expect (a centre crop,
  // pixels no patch covers, a resize the image's own size did not ask for), one sentence each with
  // its numbers; `vlmlab check` prints them as warnings.
  virtual std::vector<std::string> warnings(int64_t /*height*/, int64_t /*width*/) const { return {}; }
};

// `model_config` is the config the model was built from (patch size, image size, merge size, special
// ids); `options` holds image-processor settings by their HF preprocessor_config.json names (e.g.
// qwen2vl min_pixels/max_pixels, fuyu size); an unknown option is a ConfigError naming it.
using ProcessorFactory = std::unique_ptr<Processor> (*)(const io::HfConfig& model_config,
                                                        const nlohmann::json& options, const SpecialTokens& tokens);

}  // namespace vlm
