#pragma once

#include <memory>

#include "architectures/architecture.h"

namespace vlm::qwen2vl {

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng);

}  // namespace vlm::qwen2vl
