// Threads: one setting for the whole core. The core's own loops run on OpenMP with a static,
// deterministic partition; OpenBLAS is pinned to one thread and large GEMMs are split across the
// same threads by the core (see matmul.cpp). One pool, never two pools spinning on the same cores
// (the oversubscription trap in docs/threads.md), and a fixed partition per thread
// count, so results are bitwise reproducible for a given thread count.
#pragma once

#include <algorithm>
#include <cstdint>

namespace vlm {

void set_num_threads(int n);  // n >= 1
int num_threads();

namespace detail {
void run_chunks(int64_t chunks, void (*fn)(void*, int64_t), void* ctx);
}

// Calls f(begin, end) over [0, n) in at most num_threads() contiguous chunks of at least `grain`
// items each. The partition depends only on (n, grain, threads).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  const int64_t nt = num_threads();
  const int64_t chunks = std::min<int64_t>(nt, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (chunks <= 1) {
    f(int64_t{0}, n);
    return;
  }
  struct Ctx {
    F* f;
    int64_t n, chunks;
  } ctx{&f, n, chunks};
  detail::run_chunks(
      chunks,
      [](void* p, int64_t c) {
        auto* x = static_cast<Ctx*>(p);
        (*x->f)(x->n * c / x->chunks, x->n * (c + 1) / x->chunks);
      },
      &ctx);
}

}  // namespace vlm
