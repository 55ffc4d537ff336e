#pragma once

#include <memory>
#include <vector>

#include "architectures/architecture.h"
#include "architectures/budget.h"
#include "architectures/model_sizes.h"

namespace vlm::llava {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng);
// The model's parts for the memory budget (architectures/budget.h), from the config alone.
std::vector<ModelPart> parts(const io::HfConfig& config);
// What the processor shares with the model, read by the model's own config reader (llava.cpp), so
// both take the same keys with the same defaults.
struct ImageInput {
  int64_t image_size = 0, patch_size = 0, num_channels = 0;
  bool keep_cls = false;  // vision_feature_select_strategy "full"
  int64_t image_token_id = 0;
};
ImageInput image_input(const io::HfConfig& config);
// processor.cpp: the HF processor (image preprocessing from raw RGB, prompt layout).
std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json& options,
                                          const SpecialTokens& tokens);
// from_sizes.cpp: an HF config.json from shared sizes and family keys.
nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys);

}  // namespace vlm::llava
