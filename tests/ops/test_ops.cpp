// Forward values of the ops: hand-computed cases, fused ops against their composites (the oracle,
// values and gradients), error messages, FLOP counts and thread determinism.
#include <array>
#include <catch2/catch.hpp>
#include <cblas.h>
#include <cmath>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/measure/phase.h"
#include "lib/ops/ops.h"

using vlm::Tensor;
using TD = vlm::TensorT<double>;
using Catch::Matchers::Contains;

namespace {

TD randn(const vlm::Shape& s, uint64_t seed, double sd = 1.0) {
  vlm::Rng r(seed);
  return TD::randn(s, r, sd);
}

double max_abs_diff(const TD& a, const TD& b) {
  REQUIRE(a.shape() == b.shape());
  return (a.vec() - b.vec()).abs().maxCoeff();
}

// Runs f and g on fresh copies of the inputs, backward with the same random weights, and returns the
// largest difference in outputs and input gradients.
template <class F, class G>
double fused_vs_composite(F f, G g, const std::vector<TD>& inputs) {
  auto run = [&](auto fn) {
    std::vector<TD> xs;
    for (const auto& t : inputs) xs.push_back(t.clone().set_requires_grad(true));
    TD out = fn(xs);
    vlm::Rng r(99);
    out.backward(TD::randn(out.shape(), r));
    std::vector<TD> res{out.detach()};
    for (auto& x : xs) res.push_back(x.grad());
    return res;
  };
  const auto a = run(f), b = run(g);
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, max_abs_diff(a[i], b[i]));
  return m;
}

}  // namespace

TEST_CASE("broadcast add and mul give numpy's values", "[ops]") {
  const Tensor a = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = Tensor::from({3}, {10, 20, 30});
  CHECK(vlm::add(a, b).to_vector() == std::vector<float>{11, 22, 33, 14, 25, 36});
  const Tensor c = Tensor::from({2, 1}, {2, 3});
  CHECK(vlm::mul(a, c).to_vector() == std::vector<float>{2, 4, 6, 12, 15, 18});
  CHECK(vlm::add(c, b).shape() == vlm::Shape{2, 3});
  CHECK_THROWS_WITH(vlm::add(a, Tensor::zeros({2})), Contains("do not broadcast"));
}

TEST_CASE("reductions, permute, slice and concat values", "[ops]") {
  const Tensor a = Tensor::from({2, 3}, {1, 5, 3, 4, 2, 6});
  CHECK(vlm::sum(a, 0).to_vector() == std::vector<float>{5, 7, 9});
  CHECK(vlm::mean(a, 1, true).shape() == vlm::Shape{2, 1});
  CHECK(vlm::mean(a, 1).to_vector() == std::vector<float>{3, 4});
  CHECK(vlm::max(a, -1).to_vector() == std::vector<float>{5, 6});
  CHECK(vlm::transpose(a, 0, 1).to_vector() == std::vector<float>{1, 4, 5, 2, 3, 6});
  CHECK(vlm::slice(a, 1, 1, 3).to_vector() == std::vector<float>{5, 3, 2, 6});
  CHECK(vlm::concat(vlm::Tensors<float>{a, a}, 1).to_vector() ==
        std::vector<float>{1, 5, 3, 1, 5, 3, 4, 2, 6, 4, 2, 6});
  const Tensor x = Tensor::from({2, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  CHECK(vlm::permute(x, {2, 0, 1}).to_vector() == std::vector<float>{0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11});
  CHECK_THROWS_WITH(vlm::slice(a, 1, 2, 4), Contains("out of range"));
}

TEST_CASE("reshape shares storage and infers -1", "[ops]") {
  Tensor a = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor r = vlm::reshape(a, {3, -1});
  CHECK(r.shape() == vlm::Shape{3, 2});
  CHECK(r.data() == a.data());
  CHECK_THROWS_WITH(vlm::reshape(a, {4, -1}), Contains("cannot infer"));
  CHECK_THROWS_WITH(vlm::reshape(a, {7}), Contains("has 6 elements"));
}

TEST_CASE("matmul and linear against naive loops", "[ops]") {
  vlm::Rng rng(3);
  // (B, M, N): general products, and a vector side (M == 1 or N == 1 go to gemv).
  const std::vector<std::array<int64_t, 3>> sizes = {{3, 5, 4}, {1, 1, 4}, {3, 1, 4}, {1, 5, 1}, {3, 5, 1}, {1, 1, 1}};
  for (const auto& [B, M, N] : sizes)
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t K = 7;
      const Tensor a = Tensor::randn(ta ? vlm::Shape{B, K, M} : vlm::Shape{B, M, K}, rng);
      const Tensor b = Tensor::randn(tb ? vlm::Shape{N, K} : vlm::Shape{K, N}, rng);
      const Tensor c = vlm::matmul(a, b, ta, tb);
      REQUIRE(c.shape() == vlm::Shape{B, M, N});
      double err = 0;
      for (int64_t i = 0; i < B; ++i)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) {
              const float av = ta ? a.data()[(i * K + k) * M + m] : a.data()[(i * M + m) * K + k];
              const float bv = tb ? b.data()[n * K + k] : b.data()[k * N + n];
              s += double(av) * bv;
            }
            err = std::max(err, std::abs(s - c.data()[(i * M + m) * N + n]));
          }
      CHECK(err < 1e-5);
    }
  }
  const Tensor x = Tensor::randn({2, 3, 6}, rng), w = Tensor::randn({4, 6}, rng), bias = Tensor::randn({4}, rng);
  const Tensor y = vlm::linear(x, w, bias);
  const Tensor ref = vlm::add(vlm::matmul(x, w, false, true), bias);
  CHECK((y.vec() - ref.vec()).abs().maxCoeff() < 1e-6f);
  CHECK_THROWS_WITH(vlm::linear(x, Tensor::zeros({4, 5}), Tensor()), Contains("does not end in 5"));
  CHECK_THROWS_WITH(vlm::matmul(x, w), Contains("inner dimensions differ"));
}

TEST_CASE("fused softmax family matches its composite", "[ops][fused]") {
  const TD x = randn({3, 7}, 4, 3.0);
  auto softmax_composite = [](const std::vector<TD>& v) {
    TD e = vlm::exp(vlm::sub(v[0], vlm::max(v[0], -1, true)));
    return vlm::div(e, vlm::sum(e, -1, true));
  };
  CHECK(fused_vs_composite([](const std::vector<TD>& v) { return vlm::softmax(v[0]); }, softmax_composite, {x}) <
        1e-12);
  auto log_softmax_composite = [&](const std::vector<TD>& v) { return vlm::log(softmax_composite(v)); };
  CHECK(fused_vs_composite([](const std::vector<TD>& v) { return vlm::log_softmax(v[0]); }, log_softmax_composite,
                           {x}) < 1e-12);
  // cross-entropy = mean over kept rows of -log_softmax at the target.
  const std::vector<int64_t> targets = {2, -100, 6};
  auto ce_composite = [](const std::vector<TD>& v) {
    TD lp = vlm::log_softmax(v[0]);
    TD flat = vlm::reshape(lp, {-1, 1});
    TD picked = vlm::gather_rows(flat, {0 * 7 + 2, 2 * 7 + 6});
    return vlm::scale(vlm::sum_all(picked), -0.5);
  };
  CHECK(fused_vs_composite([&](const std::vector<TD>& v) { return vlm::cross_entropy(v[0], targets); }, ce_composite,
                           {x}) < 1e-12);
}

TEST_CASE("cross-entropy values and the ignore index", "[ops]") {
  const Tensor logits = Tensor::from({2, 3}, {0, 0, 0, 1, 2, 3});
  const double l1 = std::log(3.0);
  const double l2 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 1.0;
  CHECK(vlm::cross_entropy(logits, {1, 0}).item() == Approx((l1 + l2) / 2).epsilon(1e-6));
  CHECK(vlm::cross_entropy(logits, {1, -100}).item() == Approx(l1).epsilon(1e-6));
  Tensor p = logits.clone().set_requires_grad(true);
  Tensor none = vlm::cross_entropy(p, {-100, -100});
  CHECK(none.item() == 0.0f);
  none.backward();
  CHECK(p.grad().vec().abs().maxCoeff() == 0.0f);
  CHECK_THROWS_WITH(vlm::cross_entropy(logits, {3, 0}), Contains("target 3 at row 0"));
}

TEST_CASE("fused norms match their composites", "[ops][fused]") {
  const TD x = randn({4, 6}, 5, 2.0), w = randn({6}, 6), b = randn({6}, 7);
  const double eps = 1e-5;
  auto ln_composite = [=](const std::vector<TD>& v) {
    TD c = vlm::sub(v[0], vlm::mean(v[0], -1, true));
    TD var = vlm::mean(vlm::square(c), -1, true);
    return vlm::add(vlm::mul(vlm::mul(c, vlm::rsqrt(vlm::add_scalar(var, eps))), v[1]), v[2]);
  };
  CHECK(fused_vs_composite([=](const std::vector<TD>& v) { return vlm::layer_norm(v[0], v[1], v[2], eps); },
                           ln_composite, {x, w, b}) < 1e-12);
  auto rms_composite = [=](const std::vector<TD>& v) {
    TD ms = vlm::mean(vlm::square(v[0]), -1, true);
    return vlm::mul(vlm::mul(v[0], vlm::rsqrt(vlm::add_scalar(ms, eps))), v[1]);
  };
  CHECK(fused_vs_composite([=](const std::vector<TD>& v) { return vlm::rms_norm(v[0], v[1], eps); }, rms_composite,
                           {x, w}) < 1e-12);
}

TEST_CASE("fused activations match their definitions", "[ops][fused]") {
  const TD x = randn({5, 4}, 8, 2.0);
  using V = std::vector<TD>;
  // gelu_tanh = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  auto gelu_tanh_c = [](const V& v) {
    TD inner = vlm::add(v[0], vlm::scale(vlm::mul(vlm::square(v[0]), v[0]), 0.044715));
    TD t = vlm::tanh(vlm::scale(inner, std::sqrt(2.0 / M_PI)));
    return vlm::mul(vlm::scale(v[0], 0.5), vlm::add_scalar(t, 1.0));
  };
  CHECK(fused_vs_composite([](const V& v) { return vlm::gelu_tanh(v[0]); }, gelu_tanh_c, {x}) < 1e-12);
  auto gelu_c = [](const V& v) {
    return vlm::mul(vlm::scale(v[0], 0.5), vlm::add_scalar(vlm::erf(vlm::scale(v[0], 1.0 / std::sqrt(2.0))), 1.0));
  };
  CHECK(fused_vs_composite([](const V& v) { return vlm::gelu(v[0]); }, gelu_c, {x}) < 1e-12);
  auto quick_c = [](const V& v) { return vlm::mul(v[0], vlm::sigmoid(vlm::scale(v[0], 1.702))); };
  CHECK(fused_vs_composite([](const V& v) { return vlm::quick_gelu(v[0]); }, quick_c, {x}) < 1e-12);
  auto silu_c = [](const V& v) { return vlm::mul(v[0], vlm::sigmoid(v[0])); };
  CHECK(fused_vs_composite([](const V& v) { return vlm::silu(v[0]); }, silu_c, {x}) < 1e-12);
  auto relu2_c = [](const V& v) { return vlm::square(vlm::relu(v[0])); };
  CHECK(fused_vs_composite([](const V& v) { return vlm::relu2(v[0]); }, relu2_c, {x}) < 1e-12);
  // Known values: gelu(1) = 0.8413447, gelu_tanh(1) = 0.8411920, quick_gelu(1) = 0.8457957.
  const Tensor one = Tensor::full({1}, 1.0f);
  CHECK(vlm::gelu(one).item() == Approx(0.8413447).epsilon(1e-6));
  CHECK(vlm::gelu_tanh(one).item() == Approx(0.8411920).epsilon(1e-6));
  CHECK(vlm::quick_gelu(one).item() == Approx(0.8457957).epsilon(1e-6));
}

TEST_CASE("gather and masked scatter move the right rows", "[ops]") {
  const Tensor table = Tensor::from({3, 2}, {0, 1, 10, 11, 20, 21});
  CHECK(vlm::gather_rows(table, {2, 0, 2}).to_vector() == std::vector<float>{20, 21, 0, 1, 20, 21});
  CHECK_THROWS_WITH(vlm::gather_rows(table, {3}), Contains("id 3 at position 0"));
  const Tensor src = Tensor::from({2, 2}, {-1, -2, -3, -4});
  CHECK(vlm::scatter_rows(table, {0, 1, 1}, src).to_vector() == std::vector<float>{0, 1, -1, -2, -3, -4});
  CHECK_THROWS_WITH(vlm::scatter_rows(table, {1, 1, 1}, src), Contains("3 masked rows"));
}

TEST_CASE("ops count their FLOPs", "[ops][flops]") {
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({2, 8, 16}, rng), b = Tensor::randn({16, 4}, rng);
  vlm::FlopScope scope;
  Tensor c = vlm::matmul(a, b);
  CHECK(scope.flops() == 2 * 2 * 8 * 16 * 4);
  vlm::FlopScope lin;
  Tensor w = Tensor::randn({4, 16}, rng).set_requires_grad(true);
  Tensor y = vlm::linear(a, w, Tensor());
  CHECK(lin.flops() == 2 * 16 * 16 * 4);
  vlm::sum_all(y).backward();  // only dW: another 2·M·N·K
  CHECK(lin.flops() == 2 * (2 * 16 * 16 * 4));
}

TEST_CASE("a phase capture sums the FLOPs counted inside each phase", "[ops][flops]") {
  vlm::Rng rng(1);
  const Tensor a = Tensor::randn({8, 16}, rng), b = Tensor::randn({16, 4}, rng);
  vlm::PhaseCapture cap;
  for (int i = 0; i < 2; ++i) {
    const vlm::PhaseScope phase("vision");
    vlm::matmul(a, b);
  }
  vlm::matmul(a, b);  // outside any phase
  {
    const vlm::PhaseScope phase("connector");
    vlm::matmul(b, b, true, false);
  }
  CHECK(cap.flops("vision") == 2 * (2 * 8 * 16 * 4));
  CHECK(cap.flops("connector") == 2 * 4 * 4 * 16);
  CHECK(cap.flops("lm") == 0);
}

TEST_CASE("results are bitwise reproducible for a fixed thread count", "[ops][threads]") {
  vlm::Rng rng(2);
  const Tensor a = Tensor::randn({512, 384}, rng), b = Tensor::randn({256, 384}, rng);
  const Tensor x = Tensor::randn({300, 1000}, rng);
  for (int threads : {1, 2}) {
    vlm::set_num_threads(threads);
    const auto c1 = vlm::linear(a, b, Tensor()).to_vector();
    const auto c2 = vlm::linear(a, b, Tensor()).to_vector();
    CHECK(c1 == c2);
    const auto s1 = vlm::softmax(x).to_vector();
    CHECK(s1 == vlm::softmax(x).to_vector());
    const auto n1 = vlm::layer_norm(x, Tensor(), Tensor(), 1e-5).to_vector();
    CHECK(n1 == vlm::layer_norm(x, Tensor(), Tensor(), 1e-5).to_vector());
  }
  vlm::set_num_threads(1);
  CHECK_THROWS_WITH(vlm::set_num_threads(0), Contains(">= 1"));
}

// OpenBLAS (exported by the library): nonzero while its worker threads exist.
extern "C" int blas_server_avail;

TEST_CASE("OpenBLAS keeps no thread pool beside the core's threads", "[ops][threads]") {
  // Its idle workers busy-wait: next to the core's own threads they oversubscribe the cores.
  for (int threads : {2, 1}) {
    vlm::set_num_threads(threads);
    CHECK(openblas_get_num_threads() == 1);
    CHECK(blas_server_avail == 0);
    vlm::Rng rng(4);
    const Tensor a = Tensor::randn({512, 256}, rng), b = Tensor::randn({256, 256}, rng);
    vlm::matmul(a, b);  // split over the core's threads when there are 2
    CHECK(blas_server_avail == 0);
  }
}
