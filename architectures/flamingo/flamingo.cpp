// Placeholder until the family lands.
#include "architectures/flamingo/flamingo.h"

namespace vlm::flamingo {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng&) {
  config.fail("model_type", "the flamingo family is not implemented yet");
}

}  // namespace vlm::flamingo
