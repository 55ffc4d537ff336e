// libFuzzer target: io::parse_safetensors on arbitrary bytes. A SafetensorsError is the expected
// answer to a bad file; anything else (a crash, a sanitizer report, another exception, a timeout
// on quadratic parsing) is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "lib/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const vlm::io::Safetensors st = vlm::io::parse_safetensors(std::span<const std::uint8_t>(data, size), "fuzz");
    // Touch what a reader would: every tensor's element count and typed copy.
    for (const auto& [name, t] : st.tensors) {
      if (t.numel() > (int64_t{1} << 20)) continue;
      if (t.dtype == vlm::io::DType::F32 || t.dtype == vlm::io::DType::F16 || t.dtype == vlm::io::DType::BF16 ||
          t.dtype == vlm::io::DType::F64)
        (void)st.to_f32(name);
      else
        (void)st.to_i64(name);
    }
  } catch (const vlm::io::SafetensorsError&) {
  }
  return 0;
}
