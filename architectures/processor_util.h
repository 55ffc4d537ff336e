// What the families' HF processors share: per-channel options and left padding.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "architectures/architecture.h"

namespace vlm {

// image_mean / image_std as HF accepts them: one number for every channel or a list of 3.
std::vector<double> channel_values(const io::HfConfig& options, const std::string& key,
                                   const std::array<double, 3>& fallback);

// tokenizer.pad(padding_side="left"): input_ids (pad_id) and attention_mask (0) [B, T], every row
// ending in the last column. Each of `extra` (name, per-row values as long as the rows) is padded
// with 0 beside them (e.g. mm_token_type_ids).
Inputs left_padded(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                   const std::vector<std::pair<std::string, const std::vector<std::vector<int64_t>>*>>& extra = {});

}  // namespace vlm
