#include "architectures/fuyu/fuyu.h"

namespace vlm::fuyu {

nlohmann::json build_config(const ModelSizes&, const nlohmann::json&) {
  throw io::ConfigError("fuyu: build_config is not written yet");
}

}  // namespace vlm::fuyu
