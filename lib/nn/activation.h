// Activation functions by their HF config name (transformers activations.py, ACT2FN), so a
// `hidden_act` / `projector_hidden_act` string maps to exactly the function the reference runs.
#pragma once

#include <string>
#include <string_view>

#include "lib/io/hf_config.h"

#include "lib/core/tensor.h"

namespace vlm {

enum class Act {
  kGeluErf,    // "gelu": exact, 0.5 x (1 + erf(x / sqrt 2))
  kGeluTanh,   // "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_accurate"
  kQuickGelu,  // "quick_gelu": x * sigmoid(1.702 x)
  kSilu,       // "silu", "swish"
  kRelu,       // "relu"
  kRelu2,      // "relu2": relu(x)^2
  kTanh,       // "tanh"
  kIdentity,   // "linear"
};

// Maps an HF activation name; `key` is the config key it came from (for the error message).
// Throws ConfigError naming the key, the value and the supported names if the name is unknown.
Act parse_act(std::string_view hf_name, std::string_view key);
// config[key] (or `fallback` when absent) as an activation; the error names the file and key path.
Act config_act(const io::HfConfig& config, const std::string& key, const std::string& fallback);
// The canonical HF name of an activation (the first one parse_act accepts for it).
std::string_view act_name(Act act);

template <typename T>
TensorT<T> apply_act(Act act, const TensorT<T>& x);

}  // namespace vlm
