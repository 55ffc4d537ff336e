// attention() and KvCache against a composite reference built only from primitive ops (permute,
// HF repeat_kv, matmul, additive mask, softmax), gradient checks, memory and FLOP accounting.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "lib/core/memory.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/ops/attention.h"
#include "lib/ops/ops.h"
#include "lib/testing/gradcheck.h"

namespace vlm {
namespace {

using TD = TensorT<double>;
using TF = TensorT<float>;

struct Case {
  int64_t B = 2, Tq = 5, Tk = 5, Hq = 2, Hkv = 2, D = 4, Dv = 4;
  AttnMask mask;
};

// Which segment position i falls in (AttnMask::segments).
int64_t segment_of(const std::vector<int64_t>& segments, int64_t i) {
  int64_t s = 0;
  for (int64_t end = 0; s < static_cast<int64_t>(segments.size()); ++s)
    if (i < (end += segments[static_cast<std::size_t>(s)])) break;
  return s;
}

// The mask semantics, written independently of the kernel.
bool visible(const AttnMask& m, int64_t Tq, int64_t Tk, int64_t b, int64_t i, int64_t j) {
  if (m.causal && j > i + (Tk - Tq)) return false;
  if (!m.segments.empty() && segment_of(m.segments, i) != segment_of(m.segments, j)) return false;
  if (!m.key_valid.empty() && m.key_valid[static_cast<std::size_t>(b * Tk + j)] == 0) return false;
  if (!m.allowed.empty()) {
    const int64_t ab = m.allowed_batch == 1 ? 0 : b;
    if (m.allowed[static_cast<std::size_t>((ab * Tq + i) * Tk + j)] == 0) return false;
  }
  return true;
}

// Composite reference: HF eager attention from primitives. A fully masked row is multiplied by 0
// (HF would give uniform weights there; our contract is zeros).
template <typename T>
TensorT<T> reference_attention(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v,
                               const AttnMask& m, double sc) {
  const int64_t B = q.dim(0), Tq = q.dim(1), Hq = q.dim(2), Tk = k.dim(1), Hkv = k.dim(2);
  const int64_t rep = Hq / Hkv;
  TensorT<T> qp = permute(q, {0, 2, 1, 3});  // [B, Hq, Tq, D]
  TensorT<T> kp = permute(k, {0, 2, 1, 3});  // [B, Hkv, Tk, D]
  TensorT<T> vp = permute(v, {0, 2, 1, 3});  // [B, Hkv, Tk, Dv]
  Tensors<T> ks, vs;                         // repeat_kv: query head h reads kv head h / rep
  for (int64_t h = 0; h < Hq; ++h) {
    ks.push_back(slice(kp, 1, h / rep, h / rep + 1));
    vs.push_back(slice(vp, 1, h / rep, h / rep + 1));
  }
  TensorT<T> kr = concat(ks, 1), vr = concat(vs, 1);  // [B, Hq, Tk, D|Dv]
  std::vector<T> add_mask(static_cast<std::size_t>(B * Tq * Tk));
  std::vector<T> row_ok(static_cast<std::size_t>(B * Tq));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < Tq; ++i) {
      bool any = false;
      for (int64_t j = 0; j < Tk; ++j) {
        const bool vis = visible(m, Tq, Tk, b, i, j);
        add_mask[static_cast<std::size_t>((b * Tq + i) * Tk + j)] = vis ? T(0) : T(-1e9);
        any = any || vis;
      }
      row_ok[static_cast<std::size_t>(b * Tq + i)] = any ? T(1) : T(0);
    }
  }
  TensorT<T> s = scale(matmul(qp, kr, false, true), sc);  // [B, Hq, Tq, Tk]
  s = add(s, TensorT<T>::from({B, 1, Tq, Tk}, add_mask));
  TensorT<T> p = mul(softmax(s), TensorT<T>::from({B, 1, Tq, 1}, row_ok));
  return permute(matmul(p, vr), {0, 2, 1, 3});  // [B, Tq, Hq, Dv]
}

TF to_float(const TD& x) {
  std::vector<float> v(static_cast<std::size_t>(x.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(x.data()[i]);
  return TF::from(x.shape(), v);
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

struct Inputs {
  TD q, k, v;
};
Inputs make_inputs(const Case& c, uint64_t seed) {
  Rng rng(seed);
  return {TD::randn({c.B, c.Tq, c.Hq, c.D}, rng), TD::randn({c.B, c.Tk, c.Hkv, c.D}, rng),
          TD::randn({c.B, c.Tk, c.Hkv, c.Dv}, rng)};
}

// Forward in float within 1e-5 and gradients in double within 1e-9 of the composite.
void check_against_reference(const Case& c, uint64_t seed = 7) {
  const Inputs in = make_inputs(c, seed);
  const double sc = 1.0 / std::sqrt(static_cast<double>(c.D));
  {
    const TF qf = to_float(in.q), kf = to_float(in.k), vf = to_float(in.v);
    const TF out = attention(qf, kf, vf, c.mask, sc);
    const TF ref = reference_attention(qf, kf, vf, c.mask, sc);
    CHECK(max_abs_diff(out, ref) < 1e-5);
  }
  auto grads = [&](bool fused) {
    TD q = in.q.clone(), k = in.k.clone(), v = in.v.clone();
    q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
    TD out = fused ? attention(q, k, v, c.mask, sc) : reference_attention(q, k, v, c.mask, sc);
    Rng rng(99);
    out.backward(TD::randn(out.shape(), rng));
    return std::vector<TD>{out, q.grad(), k.grad(), v.grad()};
  };
  const std::vector<TD> got = grads(true), want = grads(false);
  CHECK(max_abs_diff(got[0], want[0]) < 1e-12);
  CHECK(max_abs_diff(got[1], want[1]) < 1e-9);
  CHECK(max_abs_diff(got[2], want[2]) < 1e-9);
  CHECK(max_abs_diff(got[3], want[3]) < 1e-9);
}

double grad_check_attention(const Case& c, uint64_t seed = 11) {
  const Inputs in = make_inputs(c, seed);
  const double sc = 1.0 / std::sqrt(static_cast<double>(c.D));
  const auto r = testing::grad_check(
      [&](const std::vector<TD>& x) { return attention(x[0], x[1], x[2], c.mask, sc); },
      {in.q, in.k, in.v});
  return r.max_error;
}

std::vector<uint8_t> padding(int64_t B, int64_t Tk, const std::vector<int64_t>& left_pad) {
  std::vector<uint8_t> kv(static_cast<std::size_t>(B * Tk), 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < left_pad[static_cast<std::size_t>(b)]; ++j) {
      kv[static_cast<std::size_t>(b * Tk + j)] = 0;
    }
  }
  return kv;
}

// [B, Tq, Tk] image mask: query i sees only the keys of "its" image; queries before the first
// image see nothing (as text tokens before any image in Flamingo cross-attention).
AttnMask per_token_mask(int64_t B, int64_t Tq, int64_t Tk) {
  AttnMask m;
  m.allowed_batch = B;
  m.allowed.assign(static_cast<std::size_t>(B * Tq * Tk), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t img = (i + b) / 2 - 1;  // -1: no image yet
      if (img < 0) continue;
      for (int64_t j = 0; j < Tk; ++j) {
        if (j % 3 == img % 3) m.allowed[static_cast<std::size_t>((b * Tq + i) * Tk + j)] = 1;
      }
    }
  }
  return m;
}

Case causal_case(int64_t Tq, int64_t Tk) {
  Case c;
  c.Tq = Tq, c.Tk = Tk;
  c.mask.causal = true;
  return c;
}

}  // namespace

TEST_CASE("attention: no mask matches the composite", "[attention]") {
  Case c;
  check_against_reference(c);
}

TEST_CASE("attention: causal with Tq == Tk matches the composite", "[attention]") {
  check_against_reference(causal_case(6, 6));
}

TEST_CASE("attention: causal with Tq < Tk (queries are the last positions)", "[attention]") {
  check_against_reference(causal_case(3, 7));
  check_against_reference(causal_case(1, 5));
}

TEST_CASE("attention: long causal sequences span several row tiles", "[attention]") {
  Case c = causal_case(150, 150);  // causal rows are processed in tiles of 64 queries
  c.B = 1, c.Hq = 2, c.Hkv = 1;
  check_against_reference(c);
  check_against_reference(causal_case(70, 200));  // tiles end mid-way through the keys
  Case more_queries = causal_case(130, 100);      // the first 30 queries see no key
  more_queries.B = 1;
  check_against_reference(more_queries);
}

TEST_CASE("attention: key padding matches the composite", "[attention]") {
  Case c;
  c.Tq = 4, c.Tk = 6;
  c.mask.key_valid = padding(c.B, c.Tk, {0, 3});
  check_against_reference(c);
  c.mask.causal = true;  // left-padded causal LM: padded queries' rows are empty
  c.Tq = c.Tk;
  check_against_reference(c);
}

TEST_CASE("attention: block-diagonal per image matches the composite", "[attention]") {
  Case c;
  c.Tq = c.Tk = 7;
  c.mask = block_diagonal_mask({3, 1, 3});
  check_against_reference(c);
  c.mask.segments = {3, 0, 4};  // an empty segment
  check_against_reference(c);
  c.mask.causal = true;  // combined with causal and key padding
  c.mask.key_valid = padding(c.B, c.Tk, {1, 0});
  check_against_reference(c);
}

TEST_CASE("attention: segments give what the dense block-diagonal mask gives", "[attention]") {
  Case c;
  c.Tq = c.Tk = 70;  // more than a causal tile
  c.mask.segments = {30, 25, 15};
  AttnMask dense;
  dense.allowed.assign(static_cast<std::size_t>(c.Tq * c.Tk), 0);
  for (int64_t i = 0; i < c.Tq; ++i)
    for (int64_t j = 0; j < c.Tk; ++j)
      dense.allowed[static_cast<std::size_t>(i * c.Tk + j)] = segment_of(c.mask.segments, i) == segment_of(c.mask.segments, j);
  for (const bool causal : {false, true}) {
    c.mask.causal = dense.causal = causal;
    const Inputs in = make_inputs(c, 11);
    auto run = [&](const AttnMask& m) {
      TD q = in.q.clone().set_requires_grad(true), k = in.k.clone().set_requires_grad(true),
         v = in.v.clone().set_requires_grad(true);
      TD out = attention(q, k, v, m, 0.5);
      Rng r(12);
      out.backward(TD::randn(out.shape(), r));
      return std::vector<TD>{out.detach(), q.grad(), k.grad(), v.grad()};
    };
    const auto a = run(c.mask), b = run(dense);
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(max_abs_diff(a[i], b[i]) < 1e-12);
  }
}

TEST_CASE("attention: training keeps only the diagonal blocks' scores of a block-diagonal mask", "[attention]") {
  // 32 images of 100 patches packed into one sequence (qwen2vl's tower at 150 px, patch 15): the
  // probabilities kept for backward are ~32 x 100² per head, not 3,200², which is 32x the memory and
  // was page-faulted in afresh at every training step.
  const int64_t n = 32, len = 100, T = n * len, H = 2, D = 8;
  Rng r(5);
  TF q = TF::randn({1, T, H, D}, r).set_requires_grad(true), k = TF::randn({1, T, H, D}, r),
     v = TF::randn({1, T, H, D}, r);
  const int64_t before = memory_stats().live_of(MemCat::kActivations);
  TF out = attention(q, k, v, block_diagonal_mask(std::vector<int64_t>(n, len)), 0.5);
  const int64_t kept = memory_stats().live_of(MemCat::kActivations) - before - out.numel() * 4;
  // Each block's rows may be padded by fewer than 16 floats (they keep the address modulo 64 bytes
  // the full matrix would give them, so the sums are the same bit for bit), and so may each block.
  CHECK(kept >= H * n * len * len * 4);
  CHECK(kept <= H * n * (len * (len + 15) + 15) * 4 + H * 16 * 4);
  out.backward(TF::randn(out.shape(), r));
  CHECK(q.grad().numel() == T * H * D);
}

TEST_CASE("block_diagonal_mask layout", "[attention]") {
  const AttnMask m = block_diagonal_mask({2, 1});
  CHECK(m.segments == std::vector<int64_t>{2, 1});
  CHECK_FALSE(m.causal);
  CHECK(m.key_valid.empty());
  CHECK(m.allowed.empty());
  CHECK_THROWS_WITH(block_diagonal_mask({2, -1}), Catch::Matchers::Contains("negative segment length -1"));
  Case c;
  c.Tq = c.Tk = 4;
  const Inputs in = make_inputs(c, 1);
  CHECK_THROWS_WITH(attention(in.q, in.k, in.v, block_diagonal_mask({2, 1}), 1.0),
                    Catch::Matchers::Contains("segments sum to 3"));
}

TEST_CASE("attention: per-token boolean mask [B, Tq, Tk] matches the composite", "[attention]") {
  Case c;
  c.Tq = 6, c.Tk = 5;
  c.mask = per_token_mask(c.B, c.Tq, c.Tk);
  check_against_reference(c);
  AttnMask shared = per_token_mask(1, c.Tq, c.Tk);  // allowed_batch = 1, shared over the batch
  c.mask = shared;
  check_against_reference(c);
}

TEST_CASE("attention: GQA reads kv head h / (Hq / Hkv)", "[attention]") {
  Case c;
  c.Hq = 4, c.Hkv = 2;
  check_against_reference(c);
  c.mask.causal = true;
  c.mask.key_valid = padding(c.B, c.Tk, {1, 0});
  check_against_reference(c);
  c.Hkv = 1;  // multi-query
  check_against_reference(c);
}

TEST_CASE("attention: value head dim differs from key head dim", "[attention]") {
  Case c;
  c.D = 4, c.Dv = 6, c.Hq = 4, c.Hkv = 2;
  c.mask.causal = true;
  check_against_reference(c);
}

TEST_CASE("attention: a fully masked row gives exact zeros and no NaN", "[attention]") {
  Case c;
  c.B = 1, c.Tq = 3, c.Tk = 4, c.Hq = 2, c.Hkv = 1;
  c.mask.allowed.assign(static_cast<std::size_t>(c.Tq * c.Tk), 1);
  std::fill_n(c.mask.allowed.begin() + c.Tk, c.Tk, uint8_t{0});  // query 1 sees nothing
  const Inputs in = make_inputs(c, 3);
  TD q = in.q.clone(), k = in.k.clone(), v = in.v.clone();
  q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
  TD out = attention(q, k, v, c.mask, 0.5);
  out.backward(TD::full(out.shape(), 1.0));
  for (int64_t h = 0; h < c.Hq; ++h) {
    for (int64_t e = 0; e < c.Dv; ++e) {
      CHECK(out.data()[(1 * c.Hq + h) * c.Dv + e] == 0.0);  // exact zero, row i = 1
      CHECK(q.grad().data()[(1 * c.Hq + h) * c.D + e] == 0.0);
    }
  }
  for (const TD& t : {out, q.grad(), k.grad(), v.grad()}) {
    for (int64_t i = 0; i < t.numel(); ++i) REQUIRE(std::isfinite(t.data()[i]));
  }
  // Every key masked for every query (e.g. a sample with no image in cross-attention).
  AttnMask none;
  none.key_valid.assign(static_cast<std::size_t>(c.B * c.Tk), 0);
  const TF o = attention(to_float(in.q), to_float(in.k), to_float(in.v), none, 0.5);
  for (int64_t i = 0; i < o.numel(); ++i) REQUIRE(o.data()[i] == 0.0f);
  // No keys at all (Tk = 0): zeros, and the output stays in the graph with zero gradients.
  TD k0 = TD::zeros({c.B, 0, c.Hkv, c.D}), v0 = TD::zeros({c.B, 0, c.Hkv, c.Dv});
  TD q0 = in.q.clone();
  q0.set_requires_grad(true);
  TD o0 = attention(q0, k0, v0, AttnMask{}, 0.5);
  REQUIRE(o0.requires_grad());
  o0.backward(TD::full(o0.shape(), 1.0));
  for (int64_t i = 0; i < o0.numel(); ++i) REQUIRE(o0.data()[i] == 0.0);
  for (int64_t i = 0; i < q0.numel(); ++i) REQUIRE(q0.grad().data()[i] == 0.0);
}

TEST_CASE("attention: gradient check for every mask kind and GQA", "[attention][grad]") {
  Case c;
  c.B = 2, c.Tq = 4, c.Tk = 4, c.Hq = 2, c.Hkv = 2, c.D = 3, c.Dv = 3;
  SECTION("no mask") { CHECK(grad_check_attention(c) < 1e-6); }
  SECTION("causal, Tq < Tk") {
    c.Tq = 2;
    c.mask.causal = true;
    CHECK(grad_check_attention(c) < 1e-6);
  }
  SECTION("key padding + causal") {
    c.mask.causal = true;
    c.mask.key_valid = padding(c.B, c.Tk, {2, 0});
    CHECK(grad_check_attention(c) < 1e-6);
  }
  SECTION("block diagonal") {
    c.mask = block_diagonal_mask({1, 3});
    CHECK(grad_check_attention(c) < 1e-6);
  }
  SECTION("per-token mask with empty rows") {
    c.Tk = 5;
    c.mask = per_token_mask(c.B, c.Tq, c.Tk);
    CHECK(grad_check_attention(c) < 1e-6);
  }
  SECTION("GQA Hq=4, Hkv=2, Dv != D") {
    c.Hq = 4, c.Dv = 2;
    c.mask.causal = true;
    CHECK(grad_check_attention(c) < 1e-6);
  }
  SECTION("MQA Hq=4, Hkv=1") {
    c.Hq = 4, c.Hkv = 1;
    CHECK(grad_check_attention(c) < 1e-6);
  }
}

TEST_CASE("gradient check catches a wrong backward", "[attention][grad]") {
  // y = x², with a backward that forgets the factor 2.
  auto wrong_square = [](const std::vector<TD>& xs) {
    const TD& x = xs[0];
    TD y = TD::empty(x.shape());
    y.vec() = x.vec() * x.vec();
    y.set_backward({x}, [](const TD& o) {
      TD in = o.input(0);
      in.grad_vec() += o.grad().vec() * in.vec();
    });
    return y;
  };
  Rng rng(5);
  const auto bad = testing::grad_check(wrong_square, {TD::randn({6}, rng)});
  CHECK(bad.max_error > 1e-2);
  // The same check passes on attention, so the harness is not just always failing.
  Case c;
  c.Tq = c.Tk = 3, c.D = c.Dv = 2;
  CHECK(grad_check_attention(c) < 1e-6);
}

TEST_CASE("attention: only the inputs that need gradients get them", "[attention][grad]") {
  Case c;
  c.Hq = 4;
  const Inputs in = make_inputs(c, 21);
  TD q = in.q.clone(), k = in.k.clone(), v = in.v.clone();
  v.set_requires_grad(true);
  TD out = attention(q, k, v, c.mask, 0.5);
  REQUIRE(out.requires_grad());
  out.backward(TD::full(out.shape(), 1.0));
  CHECK_FALSE(q.has_grad());
  CHECK_FALSE(k.has_grad());
  CHECK(v.has_grad());
  // Gradients accumulate (+=) over two backward passes.
  const TD g1 = v.grad().clone();
  TD out2 = attention(q, k, v, c.mask, 0.5);
  out2.backward(TD::full(out2.shape(), 1.0));
  for (int64_t i = 0; i < g1.numel(); ++i) CHECK(v.grad().data()[i] == Approx(2 * g1.data()[i]));
}

TEST_CASE("attention: results do not depend on the thread count", "[attention]") {
  Case c;
  c.B = 3, c.Tq = c.Tk = 9, c.Hq = 6, c.Hkv = 2;
  c.mask.causal = true;
  const Inputs in = make_inputs(c, 4);
  auto run = [&](int threads) {
    set_num_threads(threads);
    TD q = in.q.clone(), k = in.k.clone(), v = in.v.clone();
    q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
    TD out = attention(q, k, v, c.mask, 0.3);
    Rng rng(1);
    out.backward(TD::randn(out.shape(), rng));
    return std::vector<TD>{out, q.grad(), k.grad(), v.grad()};
  };
  const int saved = num_threads();
  const auto one = run(1), four = run(4);
  set_num_threads(saved);
  for (std::size_t i = 0; i < one.size(); ++i) CHECK(max_abs_diff(one[i], four[i]) == 0.0);
}

TEST_CASE("attention: shape and mask validation", "[attention]") {
  Rng rng(1);
  const TF q = TF::randn({2, 3, 4, 8}, rng), k = TF::randn({2, 5, 2, 8}, rng);
  const TF v = TF::randn({2, 5, 2, 6}, rng);
  const AttnMask none;
  CHECK_NOTHROW(attention(q, k, v, none, 1.0));
  CHECK_THROWS_AS(
      attention(q, TF::randn({2, 5, 3, 8}, rng), TF::randn({2, 5, 3, 6}, rng), none, 1.0),
      Error);                                                                        // 4 % 3 != 0
  CHECK_THROWS_AS(attention(q, TF::randn({1, 5, 2, 8}, rng), v, none, 1.0), Error);  // batch
  CHECK_THROWS_AS(attention(q, TF::randn({2, 5, 2, 7}, rng), v, none, 1.0), Error);  // D
  CHECK_THROWS_AS(attention(q, k, TF::randn({2, 4, 2, 6}, rng), none, 1.0), Error);  // Tk
  CHECK_THROWS_AS(attention(TF::randn({2, 3, 32}, rng), k, v, none, 1.0), Error);    // rank
  AttnMask bad_kv;
  bad_kv.key_valid.assign(2 * 4, 1);
  CHECK_THROWS_AS(attention(q, k, v, bad_kv, 1.0), Error);
  AttnMask bad_allowed;
  bad_allowed.allowed.assign(3 * 4, 1);
  CHECK_THROWS_AS(attention(q, k, v, bad_allowed, 1.0), Error);
  bad_allowed.allowed.assign(3 * 3 * 5, 1);
  bad_allowed.allowed_batch = 3;
  CHECK_THROWS_AS(attention(q, k, v, bad_allowed, 1.0), Error);
}

TEST_CASE("attention: FLOPs are counted, backward twice the forward", "[attention]") {
  Case c;
  c.B = 2, c.Tq = 3, c.Tk = 5, c.Hq = 4, c.Hkv = 2, c.D = 8, c.Dv = 6;
  const Inputs in = make_inputs(c, 2);
  TD q = in.q.clone(), k = in.k.clone(), v = in.v.clone();
  q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
  const int64_t fwd = c.B * c.Hq * 2 * c.Tq * c.Tk * (c.D + c.Dv);
  FlopScope f;
  TD out = attention(q, k, v, c.mask, 0.5);
  CHECK(f.flops() == fwd);
  FlopScope b;
  out.backward(TD::full(out.shape(), 1.0));
  CHECK(b.flops() == 2 * fwd);
}

TEST_CASE("attention: no probability buffer is kept without grad", "[attention][memory]") {
  const int saved = num_threads();
  set_num_threads(2);
  const int64_t B = 1, H = 8, T = 512, D = 16;
  const int64_t probs_bytes = B * H * T * T * static_cast<int64_t>(sizeof(float));
  Rng rng(3);
  TF q = TF::randn({B, T, H, D}, rng), k = TF::randn({B, T, H, D}, rng);
  TF v = TF::randn({B, T, H, D}, rng);
  AttnMask causal;
  causal.causal = true;
  q.set_requires_grad(true);
  auto peak_during = [&]() {
    reset_peak_memory();
    const int64_t before = memory_stats().live_of(MemCat::kActivations);
    { TF out = attention(q, k, v, causal, 0.25); }
    return memory_stats().peak_of(MemCat::kActivations) - before;
  };
  int64_t no_grad_peak = 0;
  {
    NoGradGuard guard;
    no_grad_peak = peak_during();
  }
  const int64_t grad_peak = peak_during();
  set_num_threads(saved);
  INFO("no-grad peak " << no_grad_peak << ", grad peak " << grad_peak << ", B*H*T*T*4 "
                       << probs_bytes);
  CHECK(no_grad_peak < probs_bytes / 2);  // out + one score block per thread
  CHECK(grad_peak >= probs_bytes);
}

TEST_CASE("attention: without gradients no Tq x Tk score matrix exists (online softmax)", "[attention][memory]") {
  // One head, long sequences: a single Tq×Tk score scratch would be 4 MiB; the online forward keeps
  // one 64×512 block per thread. Its output equals the kept-probabilities forward's (which runs
  // when q needs a gradient) across many key blocks, with causal, padding and large scores (the
  // running max moves).
  const int saved = num_threads();
  const int64_t B = 2, H = 1, T = 1024, D = 16;
  const int64_t scores_bytes = T * T * static_cast<int64_t>(sizeof(float));
  Rng rng(5);
  TF q = scale(TF::randn({B, T, H, D}, rng), 3.0), k = TF::randn({B, T, H, D}, rng);
  const TF v = TF::randn({B, T, H, D}, rng);
  AttnMask m;
  m.causal = true;
  m.key_valid = padding(B, T, {0, 300});
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    int64_t peak = 0;
    TF fused;
    {
      NoGradGuard guard;
      reset_peak_memory();
      const int64_t before = memory_stats().live_of(MemCat::kActivations);
      fused = attention(q, k, v, m, 0.25);
      peak = memory_stats().peak_of(MemCat::kActivations) - before;
    }
    const int64_t out_bytes = fused.numel() * static_cast<int64_t>(sizeof(float));
    INFO("threads " << threads << ": peak " << peak << ", output " << out_bytes << ", Tq*Tk*4 " << scores_bytes);
    CHECK(peak - out_bytes < scores_bytes / 8);
    TF qg = q.clone();
    qg.set_requires_grad(true);
    const TF kept = attention(qg, k, v, m, 0.25);
    CHECK(max_abs_diff(fused, kept) < 1e-5);
  }
  set_num_threads(saved);
}

// ---- KV cache ----

namespace {

// Runs a causal decode through the cache in chunks of the given sizes and returns the outputs
// concatenated along T.
TF decode_with_cache(const TF& q, const TF& k, const TF& v, const std::vector<uint8_t>& key_valid,
                     const std::vector<int64_t>& chunks, int64_t initial_capacity) {
  const int64_t B = q.dim(0), Tfull = q.dim(1), Hkv = k.dim(2);
  KvCache<float> cache(2, B, Hkv, k.dim(3), v.dim(3), initial_capacity);
  Tensors<float> outs;
  int64_t t = 0;
  for (int64_t n : chunks) {
    AttnMask m;
    m.causal = true;
    if (!key_valid.empty()) {  // the first t + n columns of [B, Tfull]
      for (int64_t b = 0; b < B; ++b) {
        const auto row = key_valid.begin() + b * Tfull;
        m.key_valid.insert(m.key_valid.end(), row, row + t + n);
      }
    }
    // Layer 1 gets other data, so layers must not share storage.
    cache.attend(1, slice(q, 1, t, t + n), scale(slice(k, 1, t, t + n), -1.0),
                 slice(v, 1, t, t + n), m, 0.5);
    outs.push_back(cache.attend(0, slice(q, 1, t, t + n), slice(k, 1, t, t + n),
                                slice(v, 1, t, t + n), m, 0.5));
    t += n;
    REQUIRE(cache.length(0) == t);
    REQUIRE(cache.length(1) == t);
  }
  REQUIRE(t == Tfull);
  return concat(outs, 1);
}

}  // namespace

TEST_CASE("KvCache: decoding equals the full causal forward", "[attention][kv_cache]") {
  NoGradGuard no_grad;
  const int64_t B = 2, T = 9, Hq = 4, Hkv = 2, D = 8, Dv = 8;
  Rng rng(17);
  const TF q = TF::randn({B, T, Hq, D}, rng), k = TF::randn({B, T, Hkv, D}, rng);
  const TF v = TF::randn({B, T, Hkv, Dv}, rng);
  AttnMask causal;
  causal.causal = true;
  const TF full = attention(q, k, v, causal, 0.5);

  SECTION("token by token") {
    const TF dec = decode_with_cache(q, k, v, {}, std::vector<int64_t>(T, 1), 64);
    CHECK(max_abs_diff(dec, full) < 1e-5);
  }
  SECTION("prefill then chunks of 2-3, growing past the initial capacity") {
    const TF dec = decode_with_cache(q, k, v, {}, {3, 2, 3, 1}, 2);  // capacity 2 -> 4 -> 8 -> 16
    CHECK(max_abs_diff(dec, full) < 1e-5);
  }
  SECTION("long prefill (several row tiles), then tokens") {
    const int64_t Tl = 140;
    const TF ql = TF::randn({B, Tl, Hq, D}, rng), kl = TF::randn({B, Tl, Hkv, D}, rng);
    const TF vl = TF::randn({B, Tl, Hkv, Dv}, rng);
    const TF dec = decode_with_cache(ql, kl, vl, {}, {130, 1, 9}, 64);
    CHECK(max_abs_diff(dec, attention(ql, kl, vl, causal, 0.5)) < 1e-5);
  }
  SECTION("with left padding") {
    const std::vector<uint8_t> kv = padding(B, T, {0, 3});
    AttnMask m = causal;
    m.key_valid = kv;
    const TF full_pad = attention(q, k, v, m, 0.5);
    const TF dec = decode_with_cache(q, k, v, kv, {4, 1, 1, 3}, 3);
    CHECK(max_abs_diff(dec, full_pad) < 1e-5);
    CHECK(max_abs_diff(full_pad, full) > 1e-2);  // the padding mattered
  }
}

TEST_CASE("KvCache: values survive capacity growth and clear() restarts", "[attention][kv_cache]") {
  NoGradGuard no_grad;
  const int64_t B = 2, Hkv = 1, D = 2;
  KvCache<double> cache(1, B, Hkv, D, D, 1);
  // q = 0 gives uniform attention: the output is the mean of every cached value.
  std::vector<double> sum(static_cast<std::size_t>(B * D), 0.0);
  Rng rng(8);
  for (int64_t t = 1; t <= 11; ++t) {
    const TD kn = TD::randn({B, 1, Hkv, D}, rng), vn = TD::randn({B, 1, Hkv, D}, rng);
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += vn.data()[i];
    const TD out = cache.attend(0, TD::zeros({B, 1, 1, D}), kn, vn, AttnMask{}, 1.0);
    for (std::size_t i = 0; i < sum.size(); ++i) {
      CHECK(out.data()[i] == Approx(sum[i] / static_cast<double>(t)).epsilon(1e-12));
    }
  }
  cache.clear();
  CHECK(cache.length() == 0);
  const TD vn = TD::randn({B, 1, Hkv, D}, rng);
  const TD out =
      cache.attend(0, TD::zeros({B, 1, 1, D}), TD::zeros({B, 1, Hkv, D}), vn, AttnMask{}, 1.0);
  for (int64_t i = 0; i < vn.numel(); ++i) CHECK(out.data()[i] == Approx(vn.data()[i]));
}

TEST_CASE("KvCache: memory is counted as kv_cache and grows by doubling", "[attention][kv_cache]") {
  NoGradGuard no_grad;
  const int64_t base = memory_stats().live_of(MemCat::kKvCache);
  const int64_t B = 2, Hkv = 2, D = 4, Dv = 6, cap = 4;
  const int64_t per_pos = B * Hkv * (D + Dv) * static_cast<int64_t>(sizeof(float));
  {
    KvCache<float> cache(3, B, Hkv, D, Dv, cap);
    CHECK(memory_stats().live_of(MemCat::kKvCache) - base == 3 * cap * per_pos);
    Rng rng(2);
    auto step = [&](int64_t n) {
      cache.attend(1, TF::randn({B, n, 4, D}, rng), TF::randn({B, n, Hkv, D}, rng),
                   TF::randn({B, n, Hkv, Dv}, rng), AttnMask{}, 1.0);
    };
    step(4);  // fills layer 1 exactly
    CHECK(memory_stats().live_of(MemCat::kKvCache) - base == 3 * cap * per_pos);
    step(1);  // layer 1 grows to 8 positions; the old buffers are released
    CHECK(memory_stats().live_of(MemCat::kKvCache) - base == (2 * cap + 2 * cap) * per_pos);
    step(12);  // 17 positions -> 32
    CHECK(memory_stats().live_of(MemCat::kKvCache) - base == (2 * cap + 8 * cap) * per_pos);
    CHECK(cache.length(1) == 17);
    CHECK(cache.length(0) == 0);
  }
  CHECK(memory_stats().live_of(MemCat::kKvCache) == base);
}

TEST_CASE("KvCache: inference only and validated", "[attention][kv_cache]") {
  Rng rng(4);
  KvCache<float> cache(1, 1, 2, 4, 4);
  TF q = TF::randn({1, 1, 2, 4}, rng), k = TF::randn({1, 1, 2, 4}, rng);
  TF v = TF::randn({1, 1, 2, 4}, rng);
  q.set_requires_grad(true);
  CHECK_THROWS_AS(cache.attend(0, q, k, v, AttnMask{}, 1.0), Error);
  {
    NoGradGuard no_grad;
    CHECK_NOTHROW(cache.attend(0, q, k, v, AttnMask{}, 1.0));
    CHECK_THROWS_AS(cache.attend(1, q, k, v, AttnMask{}, 1.0), Error);  // no layer 1
    CHECK_THROWS_AS(cache.attend(0, q, TF::randn({1, 1, 1, 4}, rng), TF::randn({1, 1, 1, 4}, rng),
                                 AttnMask{}, 1.0),
                    Error);  // kv heads differ from the cache's
    AttnMask m;
    m.key_valid.assign(1, 1);  // sized for Tk = 1, but Tk would be 2 after the append
    CHECK_THROWS_AS(cache.attend(0, q, k, v, m, 1.0), Error);
    CHECK(cache.length() == 1);  // the rejected calls appended nothing
  }
}

}  // namespace vlm
