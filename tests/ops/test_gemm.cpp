// gemm() on few rows with a transposed right operand, the case the register-blocked kernel of
// lib/ops/gemm_kernel.cpp takes (a linear layer on a prefill's rows): against a double-precision
// reference over shapes that leave every remainder of its 3 x 4 x 8 blocking, with strides, with
// alpha and beta as BLAS defines them, and bit-identical over thread counts; and one-row products
// (decoding a token), which gemm() splits over the threads at aligned column cuts.
#include <catch2/catch.hpp>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernel.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/ops/ops.h"

namespace {

struct Problem {
  int64_t M, N, K, lda, ldb, ldc;
  bool trans_b;                 // B stored [N, K] (a linear layer's weight) or [K, N]
  std::vector<float> A, B, C0;  // C0: C before the call
  float b(int64_t k, int64_t j) const {
    return B[static_cast<std::size_t>(trans_b ? j * ldb + k : k * ldb + j)];
  }
};

Problem make_problem(int64_t M, int64_t N, int64_t K, int64_t pad, uint64_t seed, bool trans_b = true) {
  Problem p{M, N, K, K + pad, (trans_b ? K : N) + 2 * pad, N + pad, trans_b, {}, {}, {}};
  vlm::Rng r(seed);
  auto fill = [&](int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = static_cast<float>(r.normal());
    return v;
  };
  p.A = fill(M * p.lda);
  p.B = fill((trans_b ? N : K) * p.ldb);
  p.C0 = fill(M * p.ldc);
  return p;
}

// The largest error of C = alpha·A·op(B) + beta·C0 over the M x N block, relative to the size of the
// terms (Σ|a·b|·|alpha| + |beta·c0|); the padding between rows of C must be untouched.
double max_rel_error(const Problem& p, float alpha, float beta, const std::vector<float>& C) {
  double worst = 0;
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * p.ldc + j);
      if (j >= p.N) {  // padding: untouched (NaN stays NaN, so compare the bits)
        if (std::memcmp(&C[at], &p.C0[at], sizeof(float)) != 0) return std::numeric_limits<double>::infinity();
        continue;
      }
      double s = 0, mag = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double t = double(p.A[static_cast<std::size_t>(i * p.lda + k)]) * p.b(k, j);
        s += t;
        mag += std::abs(t);
      }
      const double c0 = beta == 0.0f ? 0.0 : double(beta) * p.C0[at];
      const double ref = double(alpha) * s + c0;
      const double err = std::abs(ref - C[at]) / (std::abs(double(alpha)) * mag + std::abs(c0) + 1e-30);
      if (!(err <= worst)) worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
    }
  return worst;
}

// gemm() in inference, where it takes the kernel (with grad on it stays on OpenBLAS: see below).
std::vector<float> run_gemm(const Problem& p, float alpha, float beta, int threads) {
  vlm::NoGradGuard no_grad;
  std::vector<float> C = p.C0;
  vlm::set_num_threads(threads);
  vlm::gemm(false, p.trans_b, p.M, p.N, p.K, alpha, p.A.data(), p.lda, p.B.data(), p.ldb, beta, C.data(), p.ldc);
  vlm::set_num_threads(1);
  return C;
}

}  // namespace

TEST_CASE("few-row gemm with a transposed B matches a double reference at every remainder", "[ops][gemm]") {
  struct Scaling {
    float alpha, beta;
  };
  const std::vector<Scaling> scalings = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.75f, 0.5f}, {2.0f, 0.0f}};
  const std::vector<int64_t> Ns = {1, 2, 3, 4, 5, 7, 9, 13};
  const std::vector<int64_t> Ks = {1, 3, 7, 8, 9, 16, 31, 47, 48, 49, 67, 131};
  std::vector<int64_t> Ms;
  for (int64_t M = 1; M <= 41; ++M) Ms.push_back(M);
  for (int64_t M : {47, 55, 56, 57}) Ms.push_back(M);  // about where gemm() stops taking the kernel
  uint64_t seed = 1;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) {
        const Problem p = make_problem(M, N, K, (M + N + K) % 3, seed++);
        // Any order of summing K products, scaled and added to beta·c, is within (K + 2)·2⁻²⁴ of the
        // terms' size; leaving one product out or counting one twice is off by about 1/K of it.
        const double tol = static_cast<double>(K + 2) * 0x1.0p-24;
        for (const Scaling& s : scalings) {
          Problem q = p;
          if (s.beta == 0.0f) std::fill(q.C0.begin(), q.C0.end(), std::numeric_limits<float>::quiet_NaN());
          INFO("M " << M << " N " << N << " K " << K << " alpha " << s.alpha << " beta " << s.beta);
          const std::vector<float> C = run_gemm(q, s.alpha, s.beta, 1);
          const double err = max_rel_error(q, s.alpha, s.beta, C);
          if (!(err < tol)) REQUIRE(err < tol);
          if (!vlm::detail::kHasFewRowsKernel) continue;
          // The kernel itself at every shape, and bit for bit what gemm() gave where gemm() takes it.
          std::vector<float> D = q.C0;
          vlm::detail::sgemm_nt_few_rows(M, N, K, s.alpha, q.A.data(), q.lda, q.B.data(), q.ldb, s.beta, D.data(),
                                         q.ldc);
          const double kerr = max_rel_error(q, s.alpha, s.beta, D);
          if (!(kerr < tol)) REQUIRE(kerr < tol);
          if (vlm::detail::use_few_rows_kernel(M, K))
            REQUIRE(std::memcmp(C.data(), D.data(), C.size() * sizeof(float)) == 0);
        }
      }
}

TEST_CASE("the few-row kernel covers a prefill's rows and gives the same bits with 1 and 2 threads",
          "[ops][gemm][threads]") {
  // A prefill's projections (25-40 rows) go to the kernel when the build has it.
  for (int64_t M : {2, 25, 35, 40}) {
    CHECK(vlm::detail::use_few_rows_kernel(M, 256) == vlm::detail::kHasFewRowsKernel);
    CHECK(vlm::detail::use_few_rows_kernel(M, 1024) == vlm::detail::kHasFewRowsKernel);
  }
  CHECK_FALSE(vlm::detail::use_few_rows_kernel(1, 256));  // one row: gemv
  // Large enough that gemm() splits C's columns over 2 threads; N and K not multiples of 4 or 8.
  struct Shape3 {
    int64_t M, N, K;
  };
  for (const Shape3& s : {Shape3{35, 259, 257}, Shape3{37, 1027, 67}, Shape3{3, 2050, 129}, Shape3{40, 770, 1024}}) {
    const Problem p = make_problem(s.M, s.N, s.K, 1, 7);
    for (float beta : {0.0f, 1.0f}) {
      const std::vector<float> c1 = run_gemm(p, 1.0f, beta, 1), c2 = run_gemm(p, 1.0f, beta, 2);
      INFO("M " << s.M << " N " << s.N << " K " << s.K << " beta " << beta);
      CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
      CHECK(max_rel_error(p, 1.0f, beta, c2) < 1e-5);
    }
  }
}

TEST_CASE("linear on few rows adds the bias once, with 1 and 2 threads alike", "[ops][gemm][threads]") {
  vlm::Rng rng(5);
  const vlm::Tensor x = vlm::Tensor::randn({1, 35, 259}, rng), w = vlm::Tensor::randn({1030, 259}, rng),
                    bias = vlm::Tensor::randn({1030}, rng);
  vlm::NoGradGuard no_grad;
  std::vector<float> y[2];
  for (int threads : {1, 2}) {
    vlm::set_num_threads(threads);
    y[threads - 1] = vlm::linear(x, w, bias).to_vector();
  }
  vlm::set_num_threads(1);
  CHECK(y[0] == y[1]);
  double worst = 0;
  for (int64_t i = 0; i < 35; ++i)
    for (int64_t j = 0; j < 1030; ++j) {
      double s = bias.data()[j];
      for (int64_t k = 0; k < 259; ++k) s += double(x.data()[i * 259 + k]) * w.data()[j * 259 + k];
      worst = std::max(worst, std::abs(s - y[0][static_cast<std::size_t>(i * 1030 + j)]));
    }
  CHECK(worst < 1e-4);
}

TEST_CASE("with grad on, few-row products take the packed kernel: the few-row one is for inference only",
          "[ops][gemm]") {
  // Training takes the packed kernels of gemm_kernels.h at every M (or OpenBLAS under
  // VLMLAB_GEMM=openblas), so a data-parallel rank's half batch runs the same code as the whole batch
  // instead of the few-row kernel's other summation order.
  const vlm::detail::GemmKernel kern = vlm::detail::gemm_kernel();
  for (int64_t M : {4, 35, 40}) {
    const Problem p = make_problem(M, 259, 256, 0, 11);
    std::vector<float> want = p.C0, train = p.C0;
    if (kern == vlm::detail::GemmKernel::kOpenBlas)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), 259, 256, 1.0f, p.A.data(),
                  static_cast<blasint>(p.lda), p.B.data(), static_cast<blasint>(p.ldb), 0.0f, want.data(),
                  static_cast<blasint>(p.ldc));
    else
      vlm::detail::sgemm_packed(kern, false, true, M, 259, 256, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
                                want.data(), p.ldc);
    REQUIRE(vlm::grad_enabled());
    vlm::gemm(false, true, M, 259, 256, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f, train.data(), p.ldc);
    INFO("M " << M);
    CHECK(std::memcmp(want.data(), train.data(), want.size() * sizeof(float)) == 0);
    if (vlm::detail::kHasFewRowsKernel) {  // and inference does take the few-row kernel here: another order
      const std::vector<float> infer = run_gemm(p, 1.0f, 0.0f, 1);
      CHECK(std::memcmp(want.data(), infer.data(), want.size() * sizeof(float)) != 0);
    }
  }
}

TEST_CASE("a one-row product (decoding a token) splits over the threads from a 64K-element weight, same bits",
          "[ops][gemm][threads]") {
  // Decode's projections at the large bench size (hidden 256, MLP 1024) are split; the LM head's
  // few rows and a small model's projections are not, nor are a few rows of more than one.
  CHECK(vlm::detail::gemm_splits(1, 256, 256));
  CHECK(vlm::detail::gemm_splits(1, 768, 256));
  CHECK(vlm::detail::gemm_splits(1, 256, 1024));
  CHECK_FALSE(vlm::detail::gemm_splits(1, 42, 256));
  CHECK_FALSE(vlm::detail::gemm_splits(1, 192, 64));
  CHECK_FALSE(vlm::detail::gemm_splits(2, 256, 256));
  CHECK_FALSE(vlm::detail::gemm_splits(1, 256, 0));
  // Split or not, every output is the same dot product: the same bits with 1 and 2 threads, for a
  // weight stored [N, K] (a linear layer) or [K, N], with strides, N not a multiple of 4 or 8.
  struct Shape2 {
    int64_t N, K;
  };
  for (const Shape2& s : {Shape2{259, 257}, Shape2{1027, 129}, Shape2{770, 1024}})
    for (bool trans_b : {true, false})
      for (float beta : {0.0f, 1.0f}) {
        REQUIRE(vlm::detail::gemm_splits(1, s.N, s.K));
        const Problem p = make_problem(1, s.N, s.K, 3, 13, trans_b);
        const std::vector<float> c1 = run_gemm(p, 1.0f, beta, 1), c2 = run_gemm(p, 1.0f, beta, 2);
        INFO("N " << s.N << " K " << s.K << " trans_b " << trans_b << " beta " << beta);
        CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
        CHECK(max_rel_error(p, 1.0f, beta, c2) < static_cast<double>(s.K + 2) * 0x1.0p-24);
      }
}

TEST_CASE("a GemmRecorder sees every gemm() of its thread while alive, in order, with its mode", "[ops][gemm]") {
  // A linear layer's forward (x·Wᵀ), then its backward: dx = dy·W and dW = dyᵀ·x, both fresh (beta 0),
  // then a second backward into the same gradients, which now add (beta 1).
  vlm::Rng rng(8);
  vlm::Tensor x = vlm::Tensor::randn({6, 5}, rng), w = vlm::Tensor::randn({4, 5}, rng);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  vlm::gemm(false, false, 2, 2, 2, 1.0f, x.data(), 5, x.data(), 5, 0.0f, w.data(), 5);  // before: not seen
  std::vector<vlm::GemmCall> calls;
  {
    const vlm::GemmRecorder rec;
    CHECK_THROWS_WITH(vlm::GemmRecorder(), Catch::Contains("already has one"));
    const vlm::Tensor ones = vlm::Tensor::full({6, 4}, 1.0f);
    vlm::linear(x, w, vlm::Tensor()).backward(ones);
    vlm::linear(x, w, vlm::Tensor()).backward(ones);
    {
      vlm::NoGradGuard no_grad;
      (void)vlm::linear(x, w, vlm::Tensor());
    }
    calls = rec.calls();
  }
  using C = vlm::GemmCall;
  const std::vector<C> want{
      {false, true, 6, 4, 5, false, true},  {false, false, 6, 5, 4, false, false}, {true, false, 4, 5, 6, false, false},
      {false, true, 6, 4, 5, false, true},  {false, false, 6, 5, 4, true, false},  {true, false, 4, 5, 6, true, false},
      {false, true, 6, 4, 5, false, false}};
  REQUIRE(calls.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("call " << i);
    CHECK(calls[i] == want[i]);
  }
  const vlm::GemmRecorder after;  // the first one is gone: a new one may start, and starts empty
  CHECK(after.calls().empty());
}
