// Placeholder until the family lands.
#include "architectures/llava/llava.h"

namespace vlm::llava {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng&) {
  config.fail("model_type", "the llava family is not implemented yet");
}

}  // namespace vlm::llava
