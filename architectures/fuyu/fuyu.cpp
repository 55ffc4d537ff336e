// Placeholder until the family lands.
#include "architectures/fuyu/fuyu.h"

namespace vlm::fuyu {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng&) {
  config.fail("model_type", "the fuyu family is not implemented yet");
}

}  // namespace vlm::fuyu
