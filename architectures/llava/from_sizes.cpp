#include "architectures/llava/llava.h"

namespace vlm::llava {

nlohmann::json build_config(const ModelSizes&, const nlohmann::json&) {
  throw io::ConfigError("llava: build_config is not written yet");
}

}  // namespace vlm::llava
