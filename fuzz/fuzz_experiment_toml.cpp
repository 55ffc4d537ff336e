// libFuzzer target: an experiment TOML through exp::load_experiment_text, what `vlmlab check` and
// `vlmlab run` do before running anything: parse, validate, expand the sweep, check each run's memory
// budget (4 MiB here: the build is unoptimised) and build each run's model once. Nothing trains. A
// ConfigError (or a vlm::Error) is the expected answer to a bad file; a crash, a sanitizer report or
// another exception is a finding. The tiny_*.toml seeds fit the budget, so their mutations build models.
#include <cstddef>
#include <cstdint>
#include <string>

#include "architectures/budget.h"
#include "experiments/config.h"
#include "lib/core/parallel.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vlm::set_num_threads(1);
  vlm::set_memory_budget(int64_t{4} << 20);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)vlm::exp::load_experiment_text(text, "fuzz.toml");
  } catch (const vlm::Error&) {
  }
  return 0;
}
