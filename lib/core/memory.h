// Memory accounting: every tensor buffer is allocated here and counted under a category, so a
// phase (training step, prefill, decode) can report live and peak bytes per category.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace vlm {

enum class MemCat : int { kParameters, kGradients, kOptimizer, kActivations, kKvCache };
inline constexpr int kNumMemCats = 5;
std::string_view mem_cat_name(MemCat cat);

struct MemStats {
  std::array<int64_t, kNumMemCats> live{};
  std::array<int64_t, kNumMemCats> peak{};  // per-category peak since the last reset
  int64_t live_total = 0;
  int64_t peak_total = 0;  // peak of the sum (not the sum of the per-category peaks)
  int64_t live_of(MemCat c) const { return live[static_cast<int>(c)]; }
  int64_t peak_of(MemCat c) const { return peak[static_cast<int>(c)]; }
};

MemStats memory_stats();
void reset_peak_memory();  // peaks := current live bytes; call at the start of a phase

// 64-byte aligned, counted allocation. Bytes may be 0.
void* mem_alloc(std::size_t bytes, MemCat cat);
void mem_free(void* p, std::size_t bytes, MemCat cat) noexcept;

// The category new tensor data is counted under (default: activations). Scoped, per thread.
MemCat current_mem_cat();
class MemCatScope {
 public:
  explicit MemCatScope(MemCat cat);
  ~MemCatScope();
  MemCatScope(const MemCatScope&) = delete;
  MemCatScope& operator=(const MemCatScope&) = delete;

 private:
  MemCat prev_;
};

int64_t peak_rss_bytes();     // VmHWM of this process
int64_t current_rss_bytes();  // VmRSS of this process

}  // namespace vlm
