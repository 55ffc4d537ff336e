// Spec: docs/architectures.md §0 (ACT2FN). Ref: transformers/activations.py.
#include "lib/nn/activation.h"

#include <array>
#include <sstream>
#include <utility>

#include "lib/ops/ops.h"

namespace vlm {
namespace {

// Every name ACT2FN gives one of our functions. gelu_new, gelu_fast, gelu_pytorch_tanh and
// gelu_accurate all compute 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); they differ only
// in the order of float operations (gelu_fast writes sqrt(2/pi) to 10 digits, 3e-12 off).
constexpr auto kActNames = std::to_array<std::pair<std::string_view, Act>>({
    {"gelu", Act::kGeluErf},
    {"gelu_new", Act::kGeluTanh},
    {"gelu_fast", Act::kGeluTanh},
    {"gelu_pytorch_tanh", Act::kGeluTanh},
    {"gelu_accurate", Act::kGeluTanh},
    {"quick_gelu", Act::kQuickGelu},
    {"silu", Act::kSilu},
    {"swish", Act::kSilu},
    {"relu", Act::kRelu},
    {"relu2", Act::kRelu2},
    {"tanh", Act::kTanh},
    {"linear", Act::kIdentity},
});

}  // namespace

Act parse_act(std::string_view hf_name, std::string_view key) {
  for (const auto& [name, act] : kActNames) {
    if (name == hf_name) return act;
  }
  std::ostringstream os;
  const bool long_name = hf_name.size() > 200;  // a value from a file: keep the message readable
  os << key << ": unknown activation \"" << hf_name.substr(0, 200) << (long_name ? "..." : "") << "\"; supported:";
  for (const auto& entry : kActNames) os << ' ' << entry.first;
  throw ConfigError(os.str());
}

Act config_act(const io::HfConfig& config, const std::string& key, const std::string& fallback) {
  return parse_act(config.get_string(key, fallback), config.source() + ": " + config.key_path(key));
}

std::string_view act_name(Act act) {
  for (const auto& [name, a] : kActNames) {
    if (a == act) return name;
  }
  return "?";
}

template <typename T>
TensorT<T> apply_act(Act act, const TensorT<T>& x) {
  switch (act) {
    case Act::kGeluErf:
      return gelu(x);
    case Act::kGeluTanh:
      return gelu_tanh(x);
    case Act::kQuickGelu:
      return quick_gelu(x);
    case Act::kSilu:
      return silu(x);
    case Act::kRelu:
      return relu(x);
    case Act::kRelu2:
      return relu2(x);
    case Act::kTanh:
      return vlm::tanh(x);
    case Act::kIdentity:
      return x;
  }
  throw Error("apply_act: invalid activation");
}

template TensorT<float> apply_act(Act, const TensorT<float>&);
template TensorT<double> apply_act(Act, const TensorT<double>&);

}  // namespace vlm
