#include "lib/core/memory.h"

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <new>
#include <string>

namespace vlm {
namespace {

std::array<std::atomic<int64_t>, kNumMemCats> g_live{};
std::array<std::atomic<int64_t>, kNumMemCats> g_peak{};
std::atomic<int64_t> g_live_total{0};
std::atomic<int64_t> g_peak_total{0};
thread_local MemCat t_cat = MemCat::kActivations;

void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
  int64_t cur = peak.load(std::memory_order_relaxed);
  while (value > cur && !peak.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

int64_t read_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k(key);
  while (std::getline(f, line)) {
    if (line.rfind(k, 0) == 0) return std::stoll(line.substr(k.size())) * 1024;
  }
  return 0;
}

}  // namespace

std::string_view mem_cat_name(MemCat cat) {
  switch (cat) {
    case MemCat::kParameters: return "params";
    case MemCat::kGradients: return "grads";
    case MemCat::kOptimizer: return "optimizer";
    case MemCat::kActivations: return "activations";
    case MemCat::kKvCache: return "kv_cache";
  }
  return "?";
}

MemStats memory_stats() {
  MemStats s;
  for (int i = 0; i < kNumMemCats; ++i) {
    s.live[i] = g_live[i].load(std::memory_order_relaxed);
    s.peak[i] = g_peak[i].load(std::memory_order_relaxed);
  }
  s.live_total = g_live_total.load(std::memory_order_relaxed);
  s.peak_total = g_peak_total.load(std::memory_order_relaxed);
  return s;
}

void reset_peak_memory() {
  for (int i = 0; i < kNumMemCats; ++i) g_peak[i].store(g_live[i].load());
  g_peak_total.store(g_live_total.load());
}

namespace {

// Tensors of a step are allocated and freed again every step. glibc serves blocks above its mmap
// threshold (128 KiB at first) with fresh mappings and unmaps them on free, so each step would
// page-fault its activations and gradients in again, zero-filled by the kernel (several % of a
// training step). Raise the threshold to glibc's maximum and keep freed memory in the heap for the
// next step: the first call settles it for the process.
void keep_freed_memory() {
  static const bool once = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)once;
}

}  // namespace

void* mem_alloc(std::size_t bytes, MemCat cat) {
  keep_freed_memory();
  const std::size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw std::bad_alloc();
  const int c = static_cast<int>(cat);
  const auto b = static_cast<int64_t>(bytes);
  raise_peak(g_peak[c], g_live[c].fetch_add(b, std::memory_order_relaxed) + b);
  raise_peak(g_peak_total, g_live_total.fetch_add(b, std::memory_order_relaxed) + b);
  return p;
}

void mem_free(void* p, std::size_t bytes, MemCat cat) noexcept {
  if (p == nullptr) return;
  std::free(p);
  const auto b = static_cast<int64_t>(bytes);
  g_live[static_cast<int>(cat)].fetch_sub(b, std::memory_order_relaxed);
  g_live_total.fetch_sub(b, std::memory_order_relaxed);
}

MemCat current_mem_cat() { return t_cat; }
MemCatScope::MemCatScope(MemCat cat) : prev_(t_cat) { t_cat = cat; }
MemCatScope::~MemCatScope() { t_cat = prev_; }

int64_t peak_rss_bytes() { return read_status_kb("VmHWM:"); }
int64_t current_rss_bytes() { return read_status_kb("VmRSS:"); }

}  // namespace vlm
