// The tensor handle and the autograd tape: accumulation, graph release, no-grad scopes, teardown.
#include <catch2/catch.hpp>

#include <vector>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/ops/ops.h"

using vlm::Tensor;
using Catch::Matchers::Contains;

TEST_CASE("factories and shapes", "[tensor]") {
  const Tensor z = Tensor::zeros({2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.dim(-1) == 3);
  CHECK(z.vec().abs().sum() == 0.0f);
  CHECK(Tensor::full({}, 2.5f).item() == 2.5f);
  CHECK_THROWS_WITH(Tensor::from({2, 2}, {1, 2, 3}), Contains("needs 4 values"));
  CHECK_THROWS_WITH(z.dim(2), Contains("out of range"));
  CHECK_THROWS_WITH(Tensor().shape(), Contains("undefined tensor"));
  CHECK_FALSE(Tensor().defined());
}

TEST_CASE("random streams are deterministic per seed", "[tensor]") {
  vlm::Rng a(7), b(7), c(8);
  const Tensor x = Tensor::randn({100}, a), y = Tensor::randn({100}, b), z = Tensor::randn({100}, c);
  CHECK(x.to_vector() == y.to_vector());
  CHECK(x.to_vector() != z.to_vector());
  CHECK(std::abs(x.vec().mean()) < 0.3f);
}

TEST_CASE("gradients accumulate over every use of a tensor", "[autograd]") {
  Tensor x = Tensor::from({3}, {1, 2, 3}).set_requires_grad(true);
  Tensor y = vlm::sum_all(vlm::add(vlm::mul(x, x), x));  // d/dx = 2x + 1
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<float>{3, 5, 7});
  // A second backward accumulates into the leaf, as torch does; zero_grad clears it.
  vlm::sum_all(x).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{4, 6, 8});
  x.zero_grad();
  CHECK_FALSE(x.has_grad());
}

TEST_CASE("backward frees the graph and intermediate gradients", "[autograd]") {
  Tensor x = Tensor::from({2}, {1, 2}).set_requires_grad(true);
  Tensor h = vlm::exp(x);
  Tensor y = vlm::sum_all(vlm::mul(h, h));
  CHECK(y.num_inputs() == 1);
  y.backward();
  CHECK(y.num_inputs() == 0);
  CHECK(h.num_inputs() == 0);
  CHECK_FALSE(h.has_grad());  // only leaves keep gradients
  CHECK(x.has_grad());
  CHECK_THROWS_WITH(vlm::sum_all(Tensor::zeros({2})).backward(), Contains("does not require grad"));
}

TEST_CASE("no-grad scope records no tape", "[autograd]") {
  Tensor x = Tensor::from({2}, {1, 2}).set_requires_grad(true);
  {
    vlm::NoGradGuard no_grad;
    Tensor y = vlm::exp(x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.num_inputs() == 0);
  }
  Tensor y = vlm::exp(x);
  CHECK(y.requires_grad());
  CHECK(y.num_inputs() == 1);
  // Ops on tensors that need no gradient record nothing either.
  Tensor c = vlm::exp(Tensor::zeros({2}));
  CHECK_FALSE(c.requires_grad());
  CHECK(c.num_inputs() == 0);
}

TEST_CASE("dropping an unused graph releases all of its memory (no reference cycles)", "[autograd][memory]") {
  const int64_t before = vlm::memory_stats().live_total;
  {
    vlm::Rng rng(1);
    Tensor x = Tensor::randn({64, 64}, rng).set_requires_grad(true);
    Tensor h = x;
    for (int i = 0; i < 20; ++i) h = vlm::tanh(vlm::add(h, x));
    vlm::sum_all(h).backward();
    Tensor unused = x;  // a second graph that is never run backward
    for (int i = 0; i < 20; ++i) unused = vlm::softmax(vlm::mul(unused, x));
  }
  CHECK(vlm::memory_stats().live_total == before);
}

TEST_CASE("a very long chain is torn down without recursion", "[autograd]") {
  Tensor x = Tensor::from({1}, {0.5f}).set_requires_grad(true);
  const int64_t before = vlm::memory_stats().live_total;
  {
    Tensor h = x;
    for (int i = 0; i < 200000; ++i) h = vlm::add_scalar(h, 1e-6);
  }  // a recursive teardown would overflow the stack here
  CHECK(vlm::memory_stats().live_total == before);
  Tensor h = x;
  for (int i = 0; i < 200000; ++i) h = vlm::scale(h, 1.0);
  h.backward();
  CHECK(x.grad().item() == 1.0f);
}

TEST_CASE("a parallel region runs in its caller's grad mode on every thread", "[core][threads]") {
  // NoGradGuard is per thread; work split over threads (e.g. a GEMM's column blocks) must all see the
  // caller's mode, or the blocks the workers run could take another code path than the caller's.
  vlm::set_num_threads(2);
  std::vector<int> seen(2, -1);
  auto record = [&] {
    seen.assign(2, -1);
    vlm::parallel_for(2, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) seen[static_cast<std::size_t>(i)] = vlm::grad_enabled() ? 1 : 0;
    });
  };
  {
    vlm::NoGradGuard no_grad;
    record();
    CHECK(seen == std::vector<int>{0, 0});
  }
  record();
  CHECK(seen == std::vector<int>{1, 1});
  vlm::set_num_threads(1);
}
