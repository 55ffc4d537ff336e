#pragma once

#include <memory>
#include <vector>

#include "architectures/architecture.h"
#include "architectures/budget.h"
#include "architectures/model_sizes.h"

namespace vlm::qwen2vl {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng);
// The model's parts for the memory budget (architectures/budget.h), from the config alone.
std::vector<ModelPart> parts(const io::HfConfig& config);
// What the processor shares with the model, read by the model's own config reader (qwen2vl.cpp), so
// both take the same keys with the same defaults.
struct ImageInput {
  int64_t patch_size = 0, temporal_patch_size = 0, spatial_merge_size = 0, in_channels = 0;
  int64_t image_token_id = 0, vision_start_token_id = 0;
};
ImageInput image_input(const io::HfConfig& config);
// processor.cpp: the HF processor (image preprocessing from raw RGB, prompt layout).
std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens);
// from_sizes.cpp: an HF config.json from shared sizes and family keys.
nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys);

}  // namespace vlm::qwen2vl
