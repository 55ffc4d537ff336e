#include "architectures/flamingo/flamingo.h"

namespace vlm::flamingo {

nlohmann::json build_config(const ModelSizes&, const nlohmann::json&) {
  throw io::ConfigError("flamingo: build_config is not written yet");
}

}  // namespace vlm::flamingo
