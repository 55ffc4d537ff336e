// Memory accounting by category, peak reset per phase, and the honesty of inference numbers.
#include <catch2/catch.hpp>

#include "lib/core/random.h"
#include "lib/ops/ops.h"

using vlm::MemCat;
using vlm::Tensor;

TEST_CASE("allocations are counted under the current category", "[memory]") {
  const auto s0 = vlm::memory_stats();
  Tensor p;
  {
    vlm::MemCatScope scope(MemCat::kParameters);
    p = Tensor::zeros({256});
  }
  Tensor a = Tensor::zeros({128});
  const auto s1 = vlm::memory_stats();
  CHECK(s1.live_of(MemCat::kParameters) - s0.live_of(MemCat::kParameters) == 256 * 4);
  CHECK(s1.live_of(MemCat::kActivations) - s0.live_of(MemCat::kActivations) == 128 * 4);
  p.set_requires_grad(true);
  vlm::sum_all(vlm::mul(p, p)).backward();
  CHECK(vlm::memory_stats().live_of(MemCat::kGradients) - s0.live_of(MemCat::kGradients) == 256 * 4);
  p = Tensor();
  CHECK(vlm::memory_stats().live_of(MemCat::kParameters) == s0.live_of(MemCat::kParameters));
  CHECK(vlm::memory_stats().live_of(MemCat::kGradients) == s0.live_of(MemCat::kGradients));
}

TEST_CASE("peaks reset per phase", "[memory]") {
  { Tensor big = Tensor::zeros({1 << 16}); }
  const auto before = vlm::memory_stats();
  CHECK(before.peak_total >= before.live_total + (int64_t{1} << 18));
  vlm::reset_peak_memory();
  const auto after = vlm::memory_stats();
  CHECK(after.peak_total == after.live_total);
  CHECK(after.peak_of(MemCat::kActivations) == after.live_of(MemCat::kActivations));
}

TEST_CASE("a no-grad forward keeps no tape: its peak stays near the largest live intermediate",
          "[memory][autograd]") {
  vlm::Rng rng(3);
  Tensor w = Tensor::randn({256, 256}, rng).set_requires_grad(true);
  const Tensor x = Tensor::randn({64, 256}, rng);
  const int64_t one = 64 * 256 * 4;  // bytes of one intermediate
  const int layers = 16;
  auto forward = [&]() {
    Tensor h = x;
    for (int i = 0; i < layers; ++i) h = vlm::tanh(vlm::linear(h, w, Tensor()));
    return h;
  };
  vlm::reset_peak_memory();
  int64_t base = vlm::memory_stats().live_of(MemCat::kActivations);
  {
    vlm::NoGradGuard no_grad;
    Tensor y = forward();
  }
  const int64_t no_grad_peak = vlm::memory_stats().peak_of(MemCat::kActivations) - base;
  CHECK(no_grad_peak <= 3 * one);

  vlm::reset_peak_memory();
  base = vlm::memory_stats().live_of(MemCat::kActivations);
  { Tensor y = forward(); }
  const int64_t grad_peak = vlm::memory_stats().peak_of(MemCat::kActivations) - base;
  CHECK(grad_peak >= 2 * layers * one);  // the tape keeps every linear output and tanh output
}

TEST_CASE("peak RSS is read from the process", "[memory]") {
  const int64_t current = vlm::current_rss_bytes();  // read first: the high-water mark only grows
  const int64_t peak = vlm::peak_rss_bytes();
  CHECK(current > 0);
  CHECK(current <= peak);
}
