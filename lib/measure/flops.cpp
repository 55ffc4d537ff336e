#include "lib/measure/flops.h"

#include <atomic>

namespace vlm {
namespace {
std::atomic<int64_t> g_flops{0};
}
void add_flops(int64_t n) { g_flops.fetch_add(n, std::memory_order_relaxed); }
int64_t flop_count() { return g_flops.load(std::memory_order_relaxed); }
}  // namespace vlm
