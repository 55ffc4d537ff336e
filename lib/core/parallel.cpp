#include "lib/core/parallel.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>

#include "lib/core/check.h"
#include "lib/core/tensor.h"

// OpenBLAS (exported, not in cblas.h): stops its worker threads; a later threaded call restarts them.
extern "C" int blas_thread_shutdown_(void);

namespace vlm {
namespace {

// GEMMs are split by the core, on its own threads, so OpenBLAS runs on the calling thread. Its pool
// was started when the library loaded (OPENBLAS_NUM_THREADS, or one thread per core), and
// openblas_set_num_threads starts it again; an idle worker busy-waits (sched_yield) for about 0.1 s
// after it started or last ran: long enough to take a core from the core's own threads (a 0.8 ms
// prefill took 8 ms after a process start). So after pinning OpenBLAS to one thread, stop the pool.
void pin_openblas() {
  openblas_set_num_threads(1);
  blas_thread_shutdown_();
}

int initial_threads() {
  pin_openblas();
  return 1;
}

std::atomic<int> g_threads{initial_threads()};

}  // namespace

void set_num_threads(int n) {
  VLM_CHECK(n >= 1, "thread count must be >= 1, got " << n);
  pin_openblas();
  g_threads.store(n);
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

namespace detail {
void run_chunks(int64_t chunks, void (*fn)(void*, int64_t), void* ctx) {
  if (omp_in_parallel()) {  // nested: stay on this thread, same partition, same result
    for (int64_t c = 0; c < chunks; ++c) fn(ctx, c);
    return;
  }
  // A region runs in its caller's grad mode: NoGradGuard is per thread, and what a chunk does may
  // depend on it (gemm takes its few-row kernel in inference only), so every chunk of one call must
  // see the same mode whichever thread runs it. Workers start with grad on, like every thread.
  const bool grad = grad_enabled();
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    if (grad || !grad_enabled()) {
      fn(ctx, c);
    } else {
      NoGradGuard no_grad;
      fn(ctx, c);
    }
  }
}
}  // namespace detail

}  // namespace vlm
