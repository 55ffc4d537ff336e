// The packed kernels of lib/ops/gemm_kernels.cpp (the path of every float product of training):
// against a double-precision reference at every remainder of their tiles and blocks (M, N, K not
// multiples of 4/6/12 rows, 16/32 columns or the 256-step K block, K = 1, tiny and large), with
// both operands in either layout, strides, alpha and beta; the same bits from every kernel this CPU
// has (each element one FMA chain over k in order), with 1 and 2 threads, and for a block of rows
// computed alone (a data-parallel rank's half batch); and chosen from the CPU's own feature bits.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "lib/core/cpu.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/core/tensor.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/ops/ops.h"
#include "lib/train/optimizer.h"

namespace {

using vlm::detail::GemmKernel;

struct Problem {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb;
  std::vector<float> A, B, C0;
  float a(int64_t i, int64_t k) const { return A[static_cast<std::size_t>(ta ? k * lda + i : i * lda + k)]; }
  float b(int64_t k, int64_t j) const { return B[static_cast<std::size_t>(tb ? j * ldb + k : k * ldb + j)]; }
};

Problem make(int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t pad, uint64_t seed) {
  Problem p{M, N, K, (ta ? M : K) + pad, (tb ? K : N) + 2 * pad, N + pad, ta, tb, {}, {}, {}};
  vlm::Rng r(seed);
  auto fill = [&](int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = static_cast<float>(r.normal());
    return v;
  };
  p.A = fill((ta ? K : M) * p.lda);
  p.B = fill((tb ? N : K) * p.ldb);
  p.C0 = fill(M * p.ldc);
  return p;
}

// Largest error against alpha·Σ a·b + beta·c0 in double, relative to the size of the terms; the
// padding between C's rows must keep its bits.
double max_rel_error(const Problem& p, float alpha, float beta, const std::vector<float>& C) {
  double worst = 0;
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * p.ldc + j);
      if (j >= p.N) {
        if (std::memcmp(&C[at], &p.C0[at], sizeof(float)) != 0) return std::numeric_limits<double>::infinity();
        continue;
      }
      double s = 0, mag = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double t = double(p.a(i, k)) * p.b(k, j);
        s += t;
        mag += std::abs(t);
      }
      const double c0 = beta == 0.0f ? 0.0 : double(beta) * p.C0[at];
      const double err = std::abs(double(alpha) * s + c0 - C[at]) / (std::abs(double(alpha)) * mag + std::abs(c0) + 1e-30);
      if (!(err <= worst)) worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
    }
  return worst;
}

std::vector<float> run_packed(GemmKernel k, const Problem& p, float alpha, float beta) {
  std::vector<float> C = p.C0;
  vlm::detail::sgemm_packed(k, p.ta, p.tb, p.M, p.N, p.K, alpha, p.A.data(), p.lda, p.B.data(), p.ldb, beta,
                            C.data(), p.ldc);
  return C;
}

std::vector<GemmKernel> kernels_here() {
  std::vector<GemmKernel> ks;
  for (GemmKernel k : {GemmKernel::kPortable, GemmKernel::kAvx2, GemmKernel::kAvx512})
    if (vlm::detail::gemm_kernel_available(k)) ks.push_back(k);
  return ks;
}

bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

struct Scaling {
  float alpha, beta;
};
const std::vector<Scaling> kScalings = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.75f, 0.5f}, {2.0f, 0.0f}};

}  // namespace

TEST_CASE("the kernel is chosen from the CPU's own feature bits", "[ops][gemm][packed]") {
  const vlm::CpuFeatures& f = vlm::cpu_features();
  INFO(vlm::cpu_summary());
  const GemmKernel best = vlm::detail::best_gemm_kernel();
  CHECK(best == (f.avx512f ? GemmKernel::kAvx512 : f.avx2 && f.fma ? GemmKernel::kAvx2 : GemmKernel::kPortable));
  CHECK(vlm::detail::gemm_kernel_available(GemmKernel::kPortable));
  CHECK(vlm::detail::gemm_kernel_available(GemmKernel::kAvx512) == f.avx512f);
  // Unless VLMLAB_GEMM says otherwise (the test runs without it), gemm() uses the widest.
  if (std::getenv("VLMLAB_GEMM") == nullptr) CHECK(vlm::detail::gemm_kernel() == best);
}

TEST_CASE("every kernel matches a double reference at every remainder, both layouts, alpha and beta",
          "[ops][gemm][packed]") {
  // Rows around the tiles (4, 6, 12) and the 192-row block; columns around 16 and 32; K around the
  // 256-step block (where the chain is stored in C and reloaded) and K = 1.
  const std::vector<int64_t> Ms = {1, 2, 3, 5, 6, 7, 11, 12, 13, 25, 193};
  const std::vector<int64_t> Ns = {1, 2, 15, 16, 17, 31, 33, 65};
  const std::vector<int64_t> Ks = {1, 2, 7, 64, 255, 256, 257, 520};
  uint64_t seed = 1;
  for (GemmKernel kern : kernels_here())
    for (int64_t M : Ms)
      for (int64_t N : Ns)
        for (int64_t K : Ks) {
          const bool ta = (M + N) % 2 == 1, tb = (N + K) % 2 == 0;  // every layout pair over the grid
          const Problem p = make(M, N, K, ta, tb, (M + N + K) % 3, seed++);
          const double tol = static_cast<double>(K + 2) * 0x1.0p-24;
          for (const Scaling& s : kScalings) {
            Problem q = p;
            if (s.beta == 0.0f) std::fill(q.C0.begin(), q.C0.end(), std::numeric_limits<float>::quiet_NaN());
            const double err = max_rel_error(q, s.alpha, s.beta, run_packed(kern, q, s.alpha, s.beta));
            if (!(err < tol)) {
              INFO(vlm::detail::gemm_kernel_name(kern) << " M " << M << " N " << N << " K " << K << " ta " << ta
                                                       << " tb " << tb << " alpha " << s.alpha << " beta " << s.beta);
              REQUIRE(err < tol);
            }
          }
        }
}

TEST_CASE("all four layouts at a training shape, each against the reference", "[ops][gemm][packed]") {
  for (GemmKernel kern : kernels_here())
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Problem p = make(301, 203, 389, ta, tb, 1, 77);
        for (const Scaling& s : kScalings) {
          INFO(vlm::detail::gemm_kernel_name(kern) << " ta " << ta << " tb " << tb << " beta " << s.beta);
          CHECK(max_rel_error(p, s.alpha, s.beta, run_packed(kern, p, s.alpha, s.beta)) < 391 * 0x1.0p-24);
        }
      }
}

TEST_CASE("every kernel gives the same bits: each element is one FMA chain over k in order", "[ops][gemm][packed]") {
  const std::vector<GemmKernel> ks = kernels_here();
  INFO(vlm::cpu_summary());
  struct S {
    int64_t M, N, K;
  };
  for (const S& s : {S{1, 1, 1}, S{13, 17, 7}, S{37, 70, 300}, S{200, 129, 600}, S{64, 256, 1024}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Problem p = make(s.M, s.N, s.K, ta, tb, 2, 5);
        for (const Scaling& sc : kScalings) {
          const std::vector<float> ref = run_packed(GemmKernel::kPortable, p, sc.alpha, sc.beta);
          // The portable kernel is the chain written out: check one element by hand.
          float c = sc.beta == 0.0f ? 0.0f : sc.beta == 1.0f ? p.C0[0] : sc.beta * p.C0[0];
          for (int64_t k = 0; k < s.K; ++k) c = std::fma(sc.alpha == 1.0f ? p.a(0, k) : sc.alpha * p.a(0, k), p.b(k, 0), c);
          CHECK(std::memcmp(&c, &ref[0], sizeof(float)) == 0);
          for (GemmKernel k : ks) {
            INFO(vlm::detail::gemm_kernel_name(k) << " M " << s.M << " N " << s.N << " K " << s.K << " ta " << ta
                                                  << " tb " << tb << " beta " << sc.beta);
            CHECK(same_bits(run_packed(k, p, sc.alpha, sc.beta), ref));
          }
        }
      }
  // The machine this is written for has both wide kernels: the claim is tested there.
  if (vlm::cpu_features().avx512f) CHECK(ks.size() == 3);
}

TEST_CASE("gemm() in training takes the packed kernel: same bits with 1 and 2 threads, and for half the rows",
          "[ops][gemm][packed][threads]") {
  REQUIRE(vlm::grad_enabled());
  const GemmKernel kern = vlm::detail::gemm_kernel();
  if (kern == GemmKernel::kOpenBlas) {
    WARN("VLMLAB_GEMM=openblas: gemm() does not take the packed kernels");
    return;
  }
  struct S {
    int64_t M, N, K;
  };
  // Rows split (M >= 64), columns split in blocks of 64 (M < 64), unsplit; K over one block.
  for (const S& s : {S{512, 200, 300}, S{40, 1000, 257}, S{70, 33, 600}, S{4, 300, 300}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Problem p = make(s.M, s.N, s.K, ta, tb, 1, 9);
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> c[2];
          for (int t : {1, 2}) {
            vlm::set_num_threads(t);
            c[t - 1] = p.C0;
            vlm::gemm(ta, tb, s.M, s.N, s.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, beta, c[t - 1].data(), p.ldc);
          }
          vlm::set_num_threads(1);
          INFO("M " << s.M << " N " << s.N << " K " << s.K << " ta " << ta << " tb " << tb << " beta " << beta);
          CHECK(same_bits(c[0], c[1]));
          CHECK(same_bits(c[0], run_packed(kern, p, 1.0f, beta)));  // gemm() took the kernel
          CHECK(max_rel_error(p, 1.0f, beta, c[1]) < static_cast<double>(s.K + 2) * 0x1.0p-24);
          // A data-parallel rank's rows alone: the upper half of C computed as a product of its own.
          if (s.M >= 8 && !ta) {
            const int64_t h = s.M / 2;
            std::vector<float> half(p.C0.begin() + h * p.ldc, p.C0.end());
            vlm::gemm(ta, tb, s.M - h, s.N, s.K, 1.0f, p.A.data() + h * p.lda, p.lda, p.B.data(), p.ldb, beta,
                      half.data(), p.ldc);
            CHECK(std::memcmp(half.data(), c[0].data() + h * p.ldc, half.size() * sizeof(float)) == 0);
          }
        }
      }
}

TEST_CASE("non-finite inputs reach the output, and beta 0 ignores C's NaNs", "[ops][gemm][packed]") {
  for (GemmKernel kern : kernels_here()) {
    Problem p = make(13, 35, 9, false, true, 0, 3);
    std::fill(p.C0.begin(), p.C0.end(), std::numeric_limits<float>::quiet_NaN());
    p.A[static_cast<std::size_t>(5 * p.lda + 4)] = std::numeric_limits<float>::infinity();
    const std::vector<float> C = run_packed(kern, p, 1.0f, 0.0f);
    INFO(vlm::detail::gemm_kernel_name(kern));
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j) {
        const float c = C[static_cast<std::size_t>(i * p.ldc + j)];
        if (i == 5) CHECK(std::isinf(c));
        else CHECK(std::isfinite(c));
      }
  }
}

TEST_CASE("bf16 rounding is to nearest even, NaN stays NaN", "[ops][gemm][bf16]") {
  using vlm::detail::to_bf16;
  CHECK(to_bf16(1.0f) == 0x3f80);
  CHECK(to_bf16(-2.0f) == 0xc000);
  CHECK(to_bf16(1.0f + 0x1.0p-8f) == 0x3f80);                // halfway: to the even 1.0
  CHECK(to_bf16(1.0f + 3 * 0x1.0p-8f) == 0x3f82);            // halfway: to the even 1 + 2^-6
  CHECK(to_bf16(1.0f + 0x1.0p-8f + 0x1.0p-20f) == 0x3f81);   // above halfway: up
  CHECK(to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  const uint16_t nan = to_bf16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x7f) != 0);
}

TEST_CASE("bf16 products: exact products of the rounded inputs summed in fp32, within bf16's rounding of fp32",
          "[ops][gemm][bf16]") {
  INFO(vlm::cpu_summary() << (vlm::detail::bf16_hardware() ? " (VDPBF16PS)" : " (std::fma)"));
  auto round = [](float x) { return std::bit_cast<float>(uint32_t{vlm::detail::to_bf16(x)} << 16); };
  struct S {
    int64_t M, N, K;
  };
  double worst_vs_fp32 = 0;
  uint64_t seed = 100;
  for (const S& s : {S{1, 1, 1}, S{5, 7, 3}, S{13, 33, 2}, S{12, 32, 64}, S{37, 70, 301}, S{61, 45, 1025},
                     S{100, 130, 2100}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const Scaling& sc : kScalings) {
          const Problem p = make(s.M, s.N, s.K, ta, tb, 1, seed++);
          std::vector<float> C = p.C0;
          vlm::detail::sgemm_bf16(ta, tb, s.M, s.N, s.K, sc.alpha, p.A.data(), p.lda, p.B.data(), p.ldb, sc.beta,
                                  C.data(), p.ldc);
          // Against the rounded inputs (alpha·a rounded as packed): only fp32 summation error is left.
          Problem r = p;
          for (int64_t i = 0; i < s.M; ++i)
            for (int64_t k = 0; k < s.K; ++k) {
              float& a = r.A[static_cast<std::size_t>(ta ? k * r.lda + i : i * r.lda + k)];
              a = round(sc.alpha == 1.0f ? a : sc.alpha * a);
            }
          for (auto& b : r.B) b = round(b);
          INFO("M " << s.M << " N " << s.N << " K " << s.K << " ta " << ta << " tb " << tb << " beta " << sc.beta);
          CHECK(max_rel_error(r, 1.0f, sc.beta, C) < static_cast<double>(s.K + 2) * 0x1.0p-24);
          // Against the fp32 inputs: each product is off by at most about 2·2⁻⁹ of its size.
          const double e = max_rel_error(p, sc.alpha, sc.beta, C);
          CHECK(e < 0x1.0p-7);
          worst_vs_fp32 = std::max(worst_vs_fp32, e);
        }
  CHECK(worst_vs_fp32 > 1e-4);  // and it is bf16: far from fp32's 1e-7
}

TEST_CASE("bf16 products: the AVX512_BF16 path (vector packing, VDPBF16PS) gives the scalar path's bits",
          "[ops][gemm][bf16]") {
  // The hardware path rounds 16 values at a time as it packs; the portable one calls to_bf16 per
  // value and sums with std::fma in VDPBF16PS's order. On normal-range data (no subnormal rounded,
  // multiplied or summed) they must agree bit for bit, at every remainder of the 12 x 32 tile, of the
  // 16-value vectors and of the 1024-deep K block, odd K included, in all four layouts, with alpha
  // and beta.
  if (!vlm::detail::bf16_hardware()) SUCCEED("no AVX512_BF16 here: " << vlm::cpu_summary());
  if (!vlm::detail::bf16_hardware()) return;
  struct S {
    int64_t M, N, K;
  };
  uint64_t seed = 700;
  for (const S& s : {S{1, 1, 1}, S{2, 3, 2}, S{12, 32, 32}, S{13, 33, 33}, S{11, 31, 17}, S{25, 47, 63},
                     S{49, 65, 95}, S{7, 100, 1025}, S{37, 70, 2049}, S{60, 1030, 40}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const Scaling& sc : kScalings) {
          const Problem p = make(s.M, s.N, s.K, ta, tb, 3, seed++);
          std::vector<float> hw = p.C0, sw = p.C0;
          vlm::detail::sgemm_bf16_on(true, ta, tb, s.M, s.N, s.K, sc.alpha, p.A.data(), p.lda, p.B.data(), p.ldb,
                                     sc.beta, hw.data(), p.ldc);
          vlm::detail::sgemm_bf16_on(false, ta, tb, s.M, s.N, s.K, sc.alpha, p.A.data(), p.lda, p.B.data(), p.ldb,
                                     sc.beta, sw.data(), p.ldc);
          INFO("M " << s.M << " N " << s.N << " K " << s.K << " ta " << ta << " tb " << tb << " alpha " << sc.alpha
                    << " beta " << sc.beta);
          CHECK(same_bits(hw, sw));
        }
  // Rounding edge cases through the packers: halfway values, infinities and NaN in both operands.
  const float edge[] = {1.0f + 0x1.0p-8f, 1.0f + 3 * 0x1.0p-8f, -(1.0f + 0x1.0p-8f), 0x1.fffffep127f,
                        std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f};
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Problem p = make(13, 35, 37, ta, tb, 0, seed++);
      for (std::size_t i = 0; i < p.A.size(); i += 5) p.A[i] = edge[i % 8];
      for (std::size_t i = 0; i < p.B.size(); i += 7) p.B[i] = edge[(i / 7) % 8];
      std::vector<float> hw = p.C0, sw = p.C0;
      vlm::detail::sgemm_bf16_on(true, ta, tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
                                 hw.data(), p.ldc);
      vlm::detail::sgemm_bf16_on(false, ta, tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
                                 sw.data(), p.ldc);
      INFO("edge values, ta " << ta << " tb " << tb);
      CHECK(same_bits(hw, sw));
    }
}

TEST_CASE("a training step in bf16 precision stays within bounds of the fp32 step, and is not the fp32 step",
          "[ops][gemm][bf16]") {
  // Two linear layers with a GELU between, cross-entropy, backward, one AdamW step: every product
  // (forward, dX, dW) in bf16 under the scope, master weights, loss and optimizer in fp32.
  REQUIRE(vlm::gemm_precision() == vlm::GemmPrecision::kFp32);
  vlm::Rng rng(21);
  const vlm::Tensor x = vlm::Tensor::randn({96, 160}, rng);
  const vlm::Tensor w1_0 = vlm::Tensor::randn({200, 160}, rng), w2_0 = vlm::Tensor::randn({12, 200}, rng);
  std::vector<int64_t> targets;
  for (int64_t i = 0; i < 96; ++i) targets.push_back((i * 7) % 12);
  struct Step {
    float loss;
    std::vector<float> g1, g2, w1, w2;
  };
  auto step = [&](vlm::GemmPrecision prec, int threads) {
    vlm::set_num_threads(threads);
    vlm::Tensor w1 = vlm::scale(w1_0, 1.0 / std::sqrt(160.0)).set_requires_grad(true);
    vlm::Tensor w2 = vlm::scale(w2_0, 1.0 / std::sqrt(200.0)).set_requires_grad(true);
    vlm::AdamW<float> adam({{"w1", w1}, {"w2", w2}}, vlm::AdamWConfig{.lr = 1e-3, .weight_decay = 0.0});
    Step s;
    {
      const vlm::GemmPrecisionScope scope(prec);
      vlm::Tensor loss = vlm::cross_entropy(vlm::linear(vlm::gelu(vlm::linear(x, w1, vlm::Tensor())), w2, vlm::Tensor()),
                                            targets);
      loss.backward();
      s.loss = loss.item();
    }
    s.g1 = w1.grad().to_vector();
    s.g2 = w2.grad().to_vector();
    adam.step();
    s.w1 = w1.to_vector();
    s.w2 = w2.to_vector();
    vlm::set_num_threads(1);
    return s;
  };
  auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, n = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      n += double(b[i]) * b[i];
    }
    return std::sqrt(d / n);
  };
  const Step f = step(vlm::GemmPrecision::kFp32, 1), h = step(vlm::GemmPrecision::kBf16, 1);
  REQUIRE(vlm::gemm_precision() == vlm::GemmPrecision::kFp32);  // the scope restored it
  INFO("loss fp32 " << f.loss << " bf16 " << h.loss << "; gradients' relative deviation " << rel(h.g1, f.g1) << ", "
                    << rel(h.g2, f.g2) << "; weights after AdamW " << rel(h.w1, f.w1) << ", " << rel(h.w2, f.w2));
  CHECK(std::abs(h.loss - f.loss) <= 1e-2 * std::abs(f.loss));
  CHECK(rel(h.g1, f.g1) < 2e-2);
  CHECK(rel(h.g2, f.g2) < 2e-2);
  CHECK(rel(h.w1, f.w1) < 1e-2);
  CHECK(rel(h.w2, f.w2) < 1e-2);
  CHECK(rel(h.g1, f.g1) > 1e-5);  // the products did run in bf16
  // Deterministic: the same bits with 2 threads.
  const Step h2 = step(vlm::GemmPrecision::kBf16, 2);
  CHECK(h2.loss == h.loss);
  CHECK(h2.g1 == h.g1);
  CHECK(h2.w2 == h.w2);
}
