// A memory budget for the models a config describes, checked before anything is allocated (issue 26):
// a config.json of just {"model_type": "llava"} means a 7B-parameter model from HF's defaults, and
// `hidden_size: 1e9` far more. Each family counts its parameters from its parsed config and refuses,
// with a ConfigError naming the key that drives the size, a model whose float32 weights do not fit.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lib/io/hf_config.h"
#include "lib/nn/clip_vision.h"
#include "lib/nn/decoder_lm.h"

namespace vlm {

// A size key as written in config.json (its full path, e.g. "text_config.hidden_size"), whether the
// file sets it, and the value the family resolved for it (HF's default when unset).
struct SizeKey {
  std::string path;
  bool set = false;
  double value = 0;
};

// One part of a model: its parameter count as a function of its size keys' values (in keys' order).
struct ModelPart {
  std::string name;  // "language model", "vision tower", ...
  std::vector<SizeKey> keys;
  std::function<double(const std::vector<double>&)> count;
};

// Bytes the parameters of one model may take: set_memory_budget's value if set, else half the
// smallest of physical memory, RLIMIT_AS, RLIMIT_DATA and the cgroup's memory.max (the rest is for
// a second copy while weights load, and for activations).
int64_t memory_budget_bytes();
void set_memory_budget(int64_t bytes);  // 0: back to the machine's

// Throws a ConfigError through `cfg` naming the key that drives the size (the one whose reduction to
// 1 would remove the most parameters from the largest part) when the parts' float32 parameters
// exceed memory_budget_bytes().
void check_param_budget(const io::HfConfig& cfg, const std::vector<ModelPart>& parts);

// The parts every family shares. `c`: the (sub-)config the keys were read from, for their paths.
ModelPart lm_part(const DecoderLmConfig& lm, const io::HfConfig& c);
ModelPart clip_part(const ClipVisionConfig& v, const io::HfConfig& c);

}  // namespace vlm
