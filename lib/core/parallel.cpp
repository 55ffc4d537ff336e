#include "lib/core/parallel.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>

#include "lib/core/check.h"

namespace vlm {
namespace {

int initial_threads() {
  openblas_set_num_threads(1);  // GEMMs are split by the core, on its own threads
  return 1;
}

std::atomic<int> g_threads{initial_threads()};

}  // namespace

void set_num_threads(int n) {
  VLM_CHECK(n >= 1, "thread count must be >= 1, got " << n);
  openblas_set_num_threads(1);
  g_threads.store(n);
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

namespace detail {
void run_chunks(int64_t chunks, void (*fn)(void*, int64_t), void* ctx) {
  if (omp_in_parallel()) {  // nested: stay on this thread, same partition, same result
    for (int64_t c = 0; c < chunks; ++c) fn(ctx, c);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) fn(ctx, c);
}
}  // namespace detail

}  // namespace vlm
