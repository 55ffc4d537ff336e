// What the families' HF processors share: per-channel options and left padding.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "architectures/inputs.h"
#include "lib/io/hf_config.h"

namespace vlm {

// A processor's options (HF preprocessor_config names) as a config to read: a JSON object (or null)
// whose every key is in `known`; otherwise a ConfigError naming the key and the known ones.
io::HfConfig processor_options(const nlohmann::json& options, const std::string& family,
                               const std::vector<std::string>& known);

// rescale_factor, image_mean and image_std: what rescale_normalize_chw needs.
struct Normalization {
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> mean, std;
};
// The three options (defaults: 1/255 and the given mean/std), validated: a positive factor, no zero std.
Normalization read_normalization(const io::HfConfig& options, const std::array<double, 3>& mean,
                                 const std::array<double, 3>& std);
// [H, W, C] 8-bit values -> normalized [C, H, W] (data::rescale_normalize_chw).
Tensor normalize_chw(const Tensor& image, const Normalization& n);

// image_mean / image_std as HF accepts them: one number for every channel or a list of 3.
std::vector<double> channel_values(const io::HfConfig& options, const std::string& key,
                                   const std::array<double, 3>& fallback);

// tokenizer.pad(padding_side="left"): input_ids (pad_id) and attention_mask (0) [B, T], every row
// ending in the last column. Each of `extra` (name, per-row values as long as the rows) is padded
// with 0 beside them (e.g. mm_token_type_ids).
Inputs left_padded(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                   const std::vector<std::pair<std::string, const std::vector<std::vector<int64_t>>*>>& extra = {});

}  // namespace vlm
