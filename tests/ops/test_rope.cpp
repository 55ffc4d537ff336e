// RoPE tables (1-D, M-RoPE, vision 2-D) checked by hand, and the fused rope op against the HF
// composite x*cos + rotate_half(x)*sin built from primitive ops.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "lib/core/random.h"
#include "lib/ops/ops.h"
#include "lib/ops/rope.h"
#include "lib/testing/gradcheck.h"

namespace vlm {
namespace {

using TD = TensorT<double>;
using TF = TensorT<float>;

// HF: q_embed = q*cos + rotate_half(q)*sin on the first R dims, the rest concatenated back
// (Persimmon's partial rotary). cos/sin [Bc, T, R] broadcast over heads.
template <typename T>
TensorT<T> composite_rope(const TensorT<T>& x, const TensorT<T>& cos, const TensorT<T>& sin) {
  const int64_t D = x.dim(3), R = cos.dim(2);
  const TensorT<T> xr = slice(x, 3, 0, R);
  const TensorT<T> rot_half = concat<T>({neg(slice(xr, 3, R / 2, R)), slice(xr, 3, 0, R / 2)}, 3);
  const Shape s4{cos.dim(0), cos.dim(1), 1, R};  // [Bc, T, 1, R]
  TensorT<T> y = add(mul(xr, reshape(cos, s4)), mul(rot_half, reshape(sin, s4)));
  if (R == D) return y;
  return concat<T>({y, slice(x, 3, R, D)}, 3);
}

template <typename T>
double max_abs_diff(const TensorT<T>& a, const TensorT<T>& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = std::abs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i]));
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

std::vector<int64_t> positions_1d(int64_t Bc, int64_t T, int64_t offset) {
  std::vector<int64_t> p;
  for (int64_t b = 0; b < Bc; ++b) {
    for (int64_t t = 0; t < T; ++t) p.push_back(offset + 3 * b + t * (b + 1));
  }
  return p;
}

}  // namespace

TEST_CASE("rope_inv_freq follows HF 1/theta^(2j/dim) in fp32", "[rope]") {
  const std::vector<float> inv = rope_inv_freq(8, 10000.0);
  REQUIRE(inv.size() == 4);
  CHECK(inv[0] == 1.0f);
  CHECK(inv[1] == Approx(0.1).epsilon(1e-6));
  CHECK(inv[2] == Approx(0.01).epsilon(1e-6));
  CHECK(inv[3] == Approx(0.001).epsilon(1e-6));
  CHECK(rope_inv_freq(4, 1e6)[1] == Approx(1e-3).epsilon(1e-6));
  CHECK_THROWS_AS(rope_inv_freq(7, 10000.0), Error);
}

TEST_CASE("rope_tables_1d: cos/sin of pos * inv_freq, duplicated halves", "[rope]") {
  const std::vector<int64_t> pos{0, 1, 5, 100};
  const RopeTables<float> t = rope_tables_1d<float>(pos, 1, 4, 6, 10000.0);
  REQUIRE(t.cos.shape() == Shape{1, 4, 6});
  const std::vector<float> inv = rope_inv_freq(6, 10000.0);
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      const float a =
          static_cast<float>(pos[static_cast<std::size_t>(i)]) * inv[static_cast<std::size_t>(j)];
      CHECK(t.cos.data()[i * 6 + j] == std::cos(a));
      CHECK(t.cos.data()[i * 6 + j + 3] == std::cos(a));
      CHECK(t.sin.data()[i * 6 + j] == std::sin(a));
      CHECK(t.sin.data()[i * 6 + j + 3] == std::sin(a));
    }
  }
  CHECK(t.cos.data()[0] == 1.0f);
  CHECK(t.sin.data()[0] == 0.0f);
  // The angle is taken in fp32 before the cast to double, as HF computes it.
  const RopeTables<double> td = rope_tables_1d<double>({100}, 1, 1, 6, 10000.0);
  CHECK(td.sin.data()[1] == static_cast<double>(std::sin(100.0f * inv[1])));
}

TEST_CASE("mrope_tables: frequency chunks read t, h, w (section [2,1,1], head_dim 8)", "[rope]") {
  // One batch row, two tokens with distinct (t, h, w) so every axis is told apart.
  const std::vector<int64_t> pos{5,  2,   // t
                                 7,  3,   // h
                                 11, 4};  // w
  const RopeTables<float> tab = mrope_tables<float>(pos, 1, 2, 8, {2, 1, 1}, 10000.0);
  REQUIRE(tab.cos.shape() == Shape{1, 2, 8});
  const std::vector<float> inv = rope_inv_freq(8, 10000.0);  // the ordinary one over head_dim
  auto expect = [&](int64_t tok, int j, int64_t axis_pos) {
    const float a = static_cast<float>(axis_pos) * inv[static_cast<std::size_t>(j)];
    for (int jj : {j, j + 4}) {
      INFO("token " << tok << " dim " << jj);
      CHECK(tab.cos.data()[tok * 8 + jj] == std::cos(a));
      CHECK(tab.sin.data()[tok * 8 + jj] == std::sin(a));
    }
  };
  expect(0, 0, 5), expect(0, 1, 5), expect(0, 2, 7), expect(0, 3, 11);
  expect(1, 0, 2), expect(1, 1, 2), expect(1, 2, 3), expect(1, 3, 4);
  // Text tokens have t = h = w: M-RoPE is then ordinary 1-D RoPE.
  const std::vector<int64_t> text{4, 9, 4, 9, 4, 9};
  const RopeTables<float> m = mrope_tables<float>(text, 1, 2, 8, {2, 1, 1}, 10000.0);
  const RopeTables<float> r = rope_tables_1d<float>({4, 9}, 1, 2, 8, 10000.0);
  CHECK(max_abs_diff(m.cos, r.cos) == 0.0);
  CHECK(max_abs_diff(m.sin, r.sin) == 0.0);
  CHECK_THROWS_AS(mrope_tables<float>(pos, 1, 2, 8, {2, 1, 2}, 10000.0), Error);  // sums to 5
  CHECK_THROWS_AS(mrope_tables<float>(pos, 1, 2, 8, {3, 1}, 10000.0), Error);
}

TEST_CASE("vision_rope_tables: [h·inv | w·inv] twice over head_dim", "[rope]") {
  // head_dim 8: VisionRotaryEmbedding(dim 4) has inv = [1, 1/100] (theta 10000).
  const RopeTables<float> tab = vision_rope_tables<float>({3, 0}, {4, 2}, 8, 10000.0);
  REQUIRE(tab.cos.shape() == Shape{1, 2, 8});
  const std::vector<float> inv = rope_inv_freq(4, 10000.0);
  REQUIRE(inv[1] == Approx(0.01).epsilon(1e-6));
  const float h = 3.0f, w = 4.0f;
  const std::vector<float> angles{h * inv[0], h * inv[1], w * inv[0], w * inv[1]};
  for (int j = 0; j < 8; ++j) {
    INFO("dim " << j);
    CHECK(tab.cos.data()[j] == std::cos(angles[static_cast<std::size_t>(j % 4)]));
    CHECK(tab.sin.data()[j] == std::sin(angles[static_cast<std::size_t>(j % 4)]));
  }
  CHECK(tab.sin.data()[8 + 0] == 0.0f);  // token 1: h = 0
  CHECK(tab.sin.data()[8 + 2] == std::sin(2.0f));
  CHECK_THROWS_AS(vision_rope_tables<float>({1}, {1, 2}, 8, 10000.0), Error);
  CHECK_THROWS_AS(vision_rope_tables<float>({1}, {2}, 6, 10000.0), Error);
}

TEST_CASE("rope matches the rotate_half composite (partial rotary, per-batch table)", "[rope]") {
  const int64_t B = 2, T = 5, H = 3, D = 10, R = 6;
  Rng rng(1);
  const TD x = TD::randn({B, T, H, D}, rng);
  for (int64_t Bc : {int64_t{1}, B}) {
    INFO("Bc " << Bc);
    const std::vector<int64_t> pos = positions_1d(Bc, T, 2);
    {
      const RopeTables<float> tf = rope_tables_1d<float>(pos, Bc, T, R, 10000.0);
      std::vector<float> xf;  // the same input, narrowed to float
      for (double d : x.to_vector()) xf.push_back(static_cast<float>(d));
      const TF xt = TF::from(x.shape(), xf);
      CHECK(max_abs_diff(rope(xt, tf.cos, tf.sin), composite_rope(xt, tf.cos, tf.sin)) < 1e-6);
    }
    const RopeTables<double> td = rope_tables_1d<double>(pos, Bc, T, R, 10000.0);
    auto run = [&](bool fused) {
      TD xx = x.clone();
      xx.set_requires_grad(true);
      TD y = fused ? rope(xx, td.cos, td.sin) : composite_rope(xx, td.cos, td.sin);
      Rng r2(3);
      y.backward(TD::randn(y.shape(), r2));
      return std::vector<TD>{y, xx.grad()};
    };
    const auto got = run(true), want = run(false);
    CHECK(max_abs_diff(got[0], want[0]) < 1e-12);
    CHECK(max_abs_diff(got[1], want[1]) < 1e-12);
    // Pass-through dims are untouched.
    for (int64_t j = R; j < D; ++j) CHECK(got[0].data()[j] == x.data()[j]);
  }
}

TEST_CASE("rope gradient checks: partial rotary, M-RoPE, vision", "[rope][grad]") {
  Rng rng(9);
  SECTION("partial rotary, R < D") {
    const RopeTables<double> t = rope_tables_1d<double>(positions_1d(2, 4, 1), 2, 4, 4, 100.0);
    const auto r =
        testing::grad_check([&](const std::vector<TD>& x) { return rope(x[0], t.cos, t.sin); },
                            {TD::randn({2, 4, 2, 6}, rng)});
    CHECK(r.max_error < 1e-6);
  }
  SECTION("M-RoPE") {
    std::vector<int64_t> pos;  // [3, 2, 4]
    for (int64_t i = 0; i < 24; ++i) pos.push_back((i * 7) % 11);
    const RopeTables<double> t = mrope_tables<double>(pos, 2, 4, 8, {2, 1, 1}, 10000.0);
    const auto r =
        testing::grad_check([&](const std::vector<TD>& x) { return rope(x[0], t.cos, t.sin); },
                            {TD::randn({2, 4, 2, 8}, rng)});
    CHECK(r.max_error < 1e-6);
  }
  SECTION("vision 2-D") {
    const RopeTables<double> t = vision_rope_tables<double>({0, 0, 1, 1}, {0, 1, 0, 1}, 8, 10000.0);
    const auto r =
        testing::grad_check([&](const std::vector<TD>& x) { return rope(x[0], t.cos, t.sin); },
                            {TD::randn({1, 4, 3, 8}, rng)});
    CHECK(r.max_error < 1e-6);
  }
}

TEST_CASE("rope: shape validation and no gradient for the tables", "[rope]") {
  Rng rng(2);
  const RopeTables<float> t = rope_tables_1d<float>({0, 1, 2}, 1, 3, 8, 10000.0);
  CHECK_THROWS_AS(rope(TF::randn({1, 3, 2, 6}, rng), t.cos, t.sin), Error);  // R > D
  CHECK_THROWS_AS(rope(TF::randn({2, 4, 2, 8}, rng), t.cos, t.sin), Error);  // T differs
  CHECK_THROWS_AS(rope(TF::randn({3, 8}, rng), t.cos, t.sin), Error);        // rank
  const RopeTables<float> t2 = rope_tables_1d<float>(std::vector<int64_t>(6, 0), 2, 3, 8, 1e4);
  CHECK_THROWS_AS(rope(TF::randn({3, 3, 2, 8}, rng), t2.cos, t2.sin), Error);  // Bc not 1 or B
  CHECK_THROWS_AS(rope_tables<float>({0, 1}, 1, 1, 2, {0, 1}, {1.0f, 0.5f}), Error);  // axis 1
  TF x = TF::randn({2, 3, 2, 8}, rng);
  x.set_requires_grad(true);
  TF y = rope(x, t.cos, t.sin);
  y.backward(TF::full(y.shape(), 1.0f));
  CHECK(x.has_grad());
  CHECK_FALSE(t.cos.has_grad());
  CHECK_FALSE(t.sin.has_grad());
}

}  // namespace vlm
