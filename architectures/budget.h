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

// One part of a model: its parameter count as a function of its size keys' values (in keys' order),
// and, for the activation estimate, the sequence it runs over and its width, depth and heads.
struct ModelPart {
  std::string name;  // "language model", "vision tower", ...
  std::vector<SizeKey> keys;
  std::function<double(const std::vector<double>&)> count;
  // kText: the LM's sequence (text plus the positions images take); kVision: the tower's patches,
  // seq_scale per visual token (qwen2vl's tower sees merge^2 patches per token), or image_seq
  // positions per image when the tower sees a fixed size (CLIP); kNone: no estimate.
  enum class Seq { kNone, kText, kVision } seq = Seq::kNone;
  double width = 0, layers = 0, heads = 0, seq_scale = 1, image_seq = 0;
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

// What a model is used for beyond holding its weights, for the activation estimate. A use whose
// estimate does not fit is refused naming `key` (a TOML key such as "measure.resolutions").
struct Workload {
  std::string what;         // "training", "measurement at 64 x 64", ...
  std::string key, value;   // the key that drives this use, and its value as written
  std::string image_key;    // named instead when the images dominate the estimate (e.g. "task.image_size"),
  std::string fixed_image_key;  // or when a tower that sees a fixed image size does (CLIP's image_size)
  bool training = false;    // weights + gradients + AdamW's two moments, activations kept for backward
  double batch = 1, text_tokens = 64, images = 1;  // per sample: text positions and images
  double image_height = 0, image_width = 0;         // raw image, as the task draws it
  // From the family's processor at that size: visual tokens and LM positions per image, and the
  // size the model sees after preprocessing.
  double visual_tokens = 0, lm_tokens = 0, seen_height = 0, seen_width = 0;
};

// Bytes `w` needs besides the weights (activations and images): an estimate, documented in
// budget.cpp. `parts` as given to check_param_budget.
double workload_bytes(const std::vector<ModelPart>& parts, const Workload& w);

// check_param_budget, then each workload: copies of the weights (4 when training) plus
// workload_bytes must fit memory_budget_bytes(); otherwise a ConfigError naming the workload's key
// (or the size key that drives the weights, when the copies of the weights alone do not fit).
void check_memory_budget(const io::HfConfig& cfg, const std::vector<ModelPart>& parts,
                         const std::vector<Workload>& uses);

// The parts every family shares. `c`: the (sub-)config the keys were read from, for their paths.
ModelPart lm_part(const DecoderLmConfig& lm, const io::HfConfig& c);
ModelPart clip_part(const ClipVisionConfig& v, const io::HfConfig& c);

}  // namespace vlm
