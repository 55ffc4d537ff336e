#include "architectures/qwen2vl/qwen2vl.h"

namespace vlm::qwen2vl {

nlohmann::json build_config(const ModelSizes&, const nlohmann::json&) {
  throw io::ConfigError("qwen2vl: build_config is not written yet");
}

}  // namespace vlm::qwen2vl
