#pragma once

#include <memory>

#include "architectures/architecture.h"

namespace vlm::flamingo {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng);

}  // namespace vlm::flamingo
