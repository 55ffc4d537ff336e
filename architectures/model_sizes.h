// Models from the sizes an experiment shares across families: each family builds a complete HF
// config.json from them (FamilyEntry::build_config), with its own HF keys placed where its config
// keeps them.
#pragma once

#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "architectures/processor.h"

namespace vlm {

// The sizes an experiment shares across families ([model.text], [model.vision]); 0 means "the
// family's default rule" (e.g. num_key_value_heads = num_attention_heads).
struct ModelSizes {
  struct Text {
    int64_t hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 0;
    int64_t intermediate_size = 0;  // 0: 4 x hidden_size
  } text;
  struct Vision {
    int64_t hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 4, intermediate_size = 0;
    int64_t patch_size = 15, image_size = 75, num_channels = 3;
  } vision;
  int64_t vocab_size = 0;  // special tokens + task words
  SpecialTokens tokens;
  // The std of every weight the family draws from N(0, initializer_range) (HF's key of that name, in
  // each config the family has: text, vision, top level), so one value, or one sweep, sets it for
  // every family alike. HF's default 0.02 suits widths of 768 and more.
  double initializer_range = 0.02;
};

// An HF config.json for the family at these sizes, with `family_keys` (HF key names, e.g.
// projector_hidden_act, resampler_n_latents, spatial_merge_size) placed where the family's config
// keeps them. An unknown key is a ConfigError naming it.
using ConfigBuilder = nlohmann::json (*)(const ModelSizes& sizes, const nlohmann::json& family_keys);

// For ConfigBuilders: writes each of `keys` over an entry `config` already has (so a builder lists
// every key its family reads): a top-level key, a dotted path ("vision_config.hidden_act"), or a key
// found in exactly one sub-config object. The JSON type must match (an integer may fill a float; a
// list of numbers may fill a number, as vision_feature_layer allows). Otherwise a ConfigError naming
// the key and the keys the family accepts.
nlohmann::json apply_family_keys(nlohmann::json config, const nlohmann::json& keys, std::string_view family);
// Text sizes with the family-independent defaults resolved (kv heads = heads, intermediate = 4 x hidden).
ModelSizes::Text resolved_text(const ModelSizes& sizes);
// Vision sizes with intermediate_size 0 resolved to 4 x hidden_size.
ModelSizes::Vision resolved_vision(const ModelSizes& sizes);

}  // namespace vlm
