// Gradient checks in double for every primitive and fused op of lib/ops/ops.h (attention and RoPE
// have theirs in test_attention.cpp / test_rope.cpp), plus proof that the checker catches a wrong
// backward.
#include <catch2/catch.hpp>

#include "lib/core/random.h"
#include "lib/ops/ops.h"
#include "lib/testing/gradcheck.h"

using vlm::testing::grad_check;
using vlm::testing::TD;
using Inputs = std::vector<TD>;

namespace {

TD randn(const vlm::Shape& s, uint64_t seed, double sd = 1.0) {
  vlm::Rng r(seed);
  return TD::randn(s, r, sd);
}

// Values kept away from a kink or a singularity (relu at 0, log/sqrt/div near 0).
TD away_from_zero(const vlm::Shape& s, uint64_t seed) {
  TD t = randn(s, seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] += t.data()[i] >= 0 ? 0.2 : -0.2;
  return t;
}

TD positive(const vlm::Shape& s, uint64_t seed) {
  vlm::Rng r(seed);
  return TD::uniform(s, r, 0.5, 2.0);
}

constexpr double kTol = 1e-6;

}  // namespace

TEST_CASE("gradcheck catches a wrong backward", "[grad][meta]") {
  // x^2 with a backward that forgets the factor 2.
  auto wrong_square = [](const Inputs& in) {
    TD out = TD::empty(in[0].shape());
    out.vec() = in[0].vec().square();
    out.set_backward({in[0]}, [](const TD& o) {
      TD x = o.input(0);
      x.grad_vec() += o.grad().vec() * x.vec();
    });
    return out;
  };
  CHECK(grad_check(wrong_square, {randn({3, 4}, 1)}).max_error > 1e-2);
  // And the correct op passes on the same input.
  CHECK(grad_check([](const Inputs& in) { return vlm::square(in[0]); }, {randn({3, 4}, 1)}).max_error < kTol);
}

TEST_CASE("elementwise binary ops with broadcasting", "[grad]") {
  const std::vector<std::pair<vlm::Shape, vlm::Shape>> shapes = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 1, 4}, {3, 1}}, {{4}, {2, 3, 4}}, {{2, 3}, {}},
      {{2, 1}, {1, 3}}};  // the last: one operand through offsets, the other a trailing block
  for (const auto& [sa, sb] : shapes) {
    INFO(vlm::shape_str(sa) << " op " << vlm::shape_str(sb));
    const Inputs in = {randn(sa, 2), away_from_zero(sb, 3)};
    CHECK(grad_check([](const Inputs& x) { return vlm::add(x[0], x[1]); }, in).max_error < kTol);
    CHECK(grad_check([](const Inputs& x) { return vlm::sub(x[0], x[1]); }, in).max_error < kTol);
    CHECK(grad_check([](const Inputs& x) { return vlm::mul(x[0], x[1]); }, in).max_error < kTol);
    CHECK(grad_check([](const Inputs& x) { return vlm::div(x[0], x[1]); }, in).max_error < kTol);
  }
}

TEST_CASE("elementwise unary ops", "[grad]") {
  const TD x = away_from_zero({3, 5}, 4);
  const TD p = positive({3, 5}, 5);
  auto check = [](auto f, const TD& in) { return grad_check([&](const Inputs& v) { return f(v[0]); }, {in}).max_error; };
  CHECK(check([](const TD& v) { return vlm::scale(v, -1.7); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::add_scalar(v, 0.3); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::neg(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::exp(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::log(v); }, p) < kTol);
  CHECK(check([](const TD& v) { return vlm::sqrt(v); }, p) < kTol);
  CHECK(check([](const TD& v) { return vlm::rsqrt(v); }, p) < kTol);
  CHECK(check([](const TD& v) { return vlm::square(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::sigmoid(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::erf(v); }, x) < kTol);
}

TEST_CASE("activations", "[grad]") {
  const TD x = away_from_zero({4, 6}, 6);
  auto check = [](auto f, const TD& in) { return grad_check([&](const Inputs& v) { return f(v[0]); }, {in}).max_error; };
  CHECK(check([](const TD& v) { return vlm::tanh(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::relu(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::relu2(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::gelu(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::gelu_tanh(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::quick_gelu(v); }, x) < kTol);
  CHECK(check([](const TD& v) { return vlm::silu(v); }, x) < kTol);
}

TEST_CASE("reductions", "[grad]") {
  const TD x = randn({3, 4, 5}, 7);
  for (int axis : {0, 1, 2, -1}) {
    for (bool keep : {false, true}) {
      INFO("axis " << axis << " keepdim " << keep);
      CHECK(grad_check([=](const Inputs& v) { return vlm::sum(v[0], axis, keep); }, {x}).max_error < kTol);
      CHECK(grad_check([=](const Inputs& v) { return vlm::mean(v[0], axis, keep); }, {x}).max_error < kTol);
      CHECK(grad_check([=](const Inputs& v) { return vlm::max(v[0], axis, keep); }, {x}).max_error < kTol);
    }
  }
  CHECK(grad_check([](const Inputs& v) { return vlm::sum_all(v[0]); }, {x}).max_error < kTol);
}

TEST_CASE("movement ops", "[grad]") {
  const TD x = randn({2, 3, 4}, 8);
  CHECK(grad_check([](const Inputs& v) { return vlm::reshape(v[0], {4, -1}); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::permute(v[0], {2, 0, 1}); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::transpose(v[0], 0, 2); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::slice(v[0], 1, 1, 3); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::slice(v[0], -1, 0, 2); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::broadcast_to(v[0], {3, 2, 3, 4}); }, {x}).max_error < kTol);
  const Inputs parts = {randn({2, 1, 4}, 9), randn({2, 3, 4}, 10), randn({2, 2, 4}, 11)};
  CHECK(grad_check([](const Inputs& v) { return vlm::concat(v, 1); }, parts).max_error < kTol);
  // The same tensor twice: its gradient must accumulate from both uses.
  CHECK(grad_check([](const Inputs& v) { return vlm::concat(vlm::Tensors<double>{v[0], v[0]}, 0); }, {x}).max_error <
        kTol);
}

TEST_CASE("row gather and masked row scatter", "[grad]") {
  const TD table = randn({5, 3}, 12);
  CHECK(grad_check([](const Inputs& v) { return vlm::gather_rows(v[0], {4, 0, 4, 2}); }, {table}).max_error < kTol);
  const TD dst = randn({5, 3}, 13), src = randn({2, 3}, 14);
  CHECK(grad_check([](const Inputs& v) { return vlm::scatter_rows(v[0], {0, 1, 0, 1, 0}, v[1]); }, {dst, src})
            .max_error < kTol);
}

TEST_CASE("matmul in every transpose and batch layout", "[grad]") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      const TD a = randn(ta ? vlm::Shape{2, 4, 3} : vlm::Shape{2, 3, 4}, 15);
      const TD b2 = randn(tb ? vlm::Shape{5, 4} : vlm::Shape{4, 5}, 16);
      const TD b3 = randn(tb ? vlm::Shape{2, 5, 4} : vlm::Shape{2, 4, 5}, 17);
      const TD b1 = randn(tb ? vlm::Shape{1, 5, 4} : vlm::Shape{1, 4, 5}, 18);
      auto f = [=](const Inputs& v) { return vlm::matmul(v[0], v[1], ta, tb); };
      CHECK(grad_check(f, {a, b2}).max_error < kTol);  // shared 2-D right operand
      CHECK(grad_check(f, {a, b3}).max_error < kTol);  // batched
      CHECK(grad_check(f, {a, b1}).max_error < kTol);  // broadcast batch
    }
  }
}

TEST_CASE("linear with and without bias", "[grad]") {
  const TD x = randn({2, 3, 4}, 19), w = randn({5, 4}, 20), b = randn({5}, 21);
  CHECK(grad_check([](const Inputs& v) { return vlm::linear(v[0], v[1], v[2]); }, {x, w, b}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::linear(v[0], v[1], TD()); }, {x, w}).max_error < kTol);
}

TEST_CASE("softmax, log-softmax and cross-entropy", "[grad]") {
  const TD x = randn({3, 2, 5}, 22, 2.0);
  CHECK(grad_check([](const Inputs& v) { return vlm::softmax(v[0]); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::log_softmax(v[0]); }, {x}).max_error < kTol);
  const TD logits = randn({4, 6}, 23, 2.0);
  CHECK(grad_check([](const Inputs& v) { return vlm::cross_entropy(v[0], {1, -100, 5, 0}); }, {logits}).max_error <
        kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::cross_entropy(v[0], {2, 3, 3, 1}, 3); }, {logits}).max_error <
        kTol);
}

TEST_CASE("layer norm and rms norm", "[grad]") {
  const TD x = randn({3, 2, 6}, 24, 2.0), w = randn({6}, 25), b = randn({6}, 26);
  CHECK(grad_check([](const Inputs& v) { return vlm::layer_norm(v[0], v[1], v[2], 1e-5); }, {x, w, b}).max_error <
        kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::layer_norm(v[0], v[1], TD(), 1e-6); }, {x, w}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::layer_norm(v[0], TD(), TD(), 1e-5); }, {x}).max_error < kTol);
  CHECK(grad_check([](const Inputs& v) { return vlm::rms_norm(v[0], v[1], 1e-6); }, {x, w}).max_error < kTol);
}
