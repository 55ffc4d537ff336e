// Placeholder until the family lands.
#include "architectures/qwen2vl/qwen2vl.h"

namespace vlm::qwen2vl {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng&) {
  config.fail("model_type", "the qwen2vl family is not implemented yet");
}

}  // namespace vlm::qwen2vl
