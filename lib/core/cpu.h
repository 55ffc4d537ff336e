// What the CPU this process runs on can do, read from its own CPUID feature bits and the OS's
// XCR0 (whether it saves the wider registers), never from a library's model table or from
// OPENBLAS_CORETYPE: the choice of matrix kernels (lib/ops/gemm_kernels.h) rests on it, so one
// x86-64 binary runs at the width of whatever machine it lands on.
#pragma once

#include <string>

namespace vlm {

struct CpuFeatures {
  bool avx2 = false, fma = false;         // 256-bit vectors with fused multiply-add
  bool avx512f = false;                   // 512-bit vectors (and the OS saves them)
  bool avx512bw = false, avx512vl = false;
  bool avx512_bf16 = false;               // VDPBF16PS: bf16 pairs multiplied, summed in fp32
  std::string vendor;                     // "GenuineIntel", "AuthenticAMD", ...
  int family = 0, model = 0;              // display family and model (family 26 = AMD Zen 5)
};

// Detected once, on first use.
const CpuFeatures& cpu_features();

// One line for logs and benchmark headers, e.g. "AuthenticAMD family 26 model 2: avx2 fma avx512f avx512_bf16".
std::string cpu_summary();

}  // namespace vlm
