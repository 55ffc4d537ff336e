#include "lib/core/cpu.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace vlm {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register states the OS saves on a context switch. A CPU may have AVX-512 that the
// OS (or the hypervisor) does not enable; using it then faults.
uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t{hi} << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;
  __get_cpuid(1, &a, &b, &c, &d);
  const unsigned base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
  f.family = static_cast<int>(base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family);
  f.model = static_cast<int>(base_family == 0x6 || base_family == 0xf ? (((a >> 16) & 0xf) << 4) | base_model
                                                                      : base_model);
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr = xcr0();
  const bool ymm_state = (xcr & 0x6) == 0x6;     // SSE and AVX state
  const bool zmm_state = (xcr & 0xe6) == 0xe6;   // plus opmask, ZMM0-15 upper halves, ZMM16-31
  if (!ymm_state || max_leaf < 7) return f;
  __get_cpuid_count(7, 0, &a, &b, &c, &d);
  f.avx2 = (b >> 5) & 1;
  f.fma = fma;
  if (zmm_state) {
    f.avx512f = (b >> 16) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    __get_cpuid_count(7, 1, &a, &b, &c, &d);
    f.avx512_bf16 = f.avx512f && ((a >> 5) & 1);
  }
  return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string cpu_summary() {
  const CpuFeatures& f = cpu_features();
  std::string s = (f.vendor.empty() ? std::string("unknown CPU") : f.vendor) + " family " +
                  std::to_string(f.family) + " model " + std::to_string(f.model) + ":";
  if (f.avx2) s += " avx2";
  if (f.fma) s += " fma";
  if (f.avx512f) s += " avx512f";
  if (f.avx512bw) s += " avx512bw";
  if (f.avx512vl) s += " avx512vl";
  if (f.avx512_bf16) s += " avx512_bf16";
  return s;
}

}  // namespace vlm
