// libFuzzer target: a config.json through the path load_pretrained takes (architectures/
// pretrained.cpp): the bounded JSON reader, the family named by model_type, its config reader and
// parameter count (the memory budget), then the model itself when it fits a 4 MiB budget (the build
// is unoptimised). A ConfigError (or the family's vlm::Error on an impossible combination) is the
// expected answer to a bad config; a crash, a sanitizer report, another exception or an allocation
// the budget should have refused is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "architectures/registry.h"
#include "architectures/budget.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/io/hf_config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vlm::set_num_threads(1);
  vlm::set_memory_budget(int64_t{4} << 20);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const vlm::io::HfConfig cfg(vlm::io::parse_json_text(text, "config.json"), "config.json");
    const vlm::FamilyEntry& family = vlm::family_for_config(cfg);
    vlm::check_param_budget(cfg, family.parts(cfg));
    vlm::Rng rng(0);
    (void)vlm::make_architecture(cfg, rng);
  } catch (const vlm::Error&) {
  }
  return 0;
}
