// TODO(processor helper): the HF processor for this family.
#include "architectures/flamingo/flamingo.h"

namespace vlm::flamingo {

std::unique_ptr<Processor> make_processor(const io::HfConfig& model_config, const nlohmann::json&,
                                          const SpecialTokens&) {
  model_config.fail("model_type", "no processor yet");
}

}  // namespace vlm::flamingo
