// HF-format model folders: config.json + model.safetensors (+ generation_config.json), as
// transformers' from_pretrained reads and save_pretrained writes them.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "architectures/architecture.h"
#include "lib/io/hf_config.h"
#include "lib/io/safetensors.h"

namespace vlm {

// DIR/config.json + DIR/model.safetensors (names as transformers writes them, or an alias layout).
std::unique_ptr<Architecture> load_pretrained(const std::string& dir);
void load_weights(Architecture& arch, const io::Safetensors& st);
// Writes DIR/config.json, DIR/model.safetensors and DIR/generation_config.json so transformers (and
// load_pretrained) open it.
void save_pretrained(Architecture& arch, const std::string& dir);
// The generation settings transformers derives from a model's config (GenerationConfig's
// from_model_config): bos_token_id, eos_token_id and pad_token_id from the top level, else from
// text_config (where qwen2vl keeps them). What save_pretrained writes as generation_config.json.
nlohmann::json generation_config(const io::HfConfig& config);

}  // namespace vlm
