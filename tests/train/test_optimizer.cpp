// Tests for lib/train/optimizer: AdamW against torch.optim.AdamW's update written out by hand,
// learning-rate schedules, gradient clipping, and two tiny end-to-end training runs.
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "lib/core/memory.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/nn/modules.h"
#include "lib/ops/ops.h"
#include "lib/train/optimizer.h"

namespace vlm {
namespace {

using TD = TensorT<double>;

TD leaf(const std::vector<double>& values) {
  TD t = TD::from({static_cast<int64_t>(values.size())}, values);
  t.set_requires_grad(true);
  return t;
}

template <typename T>
void set_grad(TensorT<T>& p, const std::vector<double>& g) {
  p.zero_grad();
  T* d = p.grad_data();
  for (std::size_t i = 0; i < g.size(); ++i) d[i] = static_cast<T>(g[i]);
}

// Adam with decoupled weight decay in its textbook form (Loshchilov & Hutter; the torch docs'
// pseudo-code): bias-corrected moments m̂, v̂ and p -= lr m̂ / (sqrt(v̂) + eps).
struct RefAdamW {
  double lr, b1, b2, eps, wd;
  std::vector<double> p, m, v;
  int t = 0;
  void step(const std::vector<double>& g, bool decay) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] = p[i] - lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] = p[i] - lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

}  // namespace

TEST_CASE("AdamW: step 1 equals the hand-derived p(1 - lr wd) - lr g / (|g| + eps)",
          "[train][adamw]") {
  // At t = 1, m̂ = g and v̂ = g², so the update is lr g / (|g| + eps).
  TD p = leaf({1.0, -2.0});
  AdamW<double> opt({{"w", p, true}}, AdamWConfig{0.1, 0.9, 0.999, 1e-8, 0.1});
  set_grad(p, {0.5, -0.25});
  opt.step();
  CHECK(p.data()[0] == Approx(1.0 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)).margin(1e-15));
  CHECK(p.data()[1] == Approx(-2.0 * 0.99 + 0.1 * 0.25 / (0.25 + 1e-8)).margin(1e-15));
  CHECK(p.data()[0] == Approx(0.890000002).margin(1e-12));
  CHECK(p.data()[1] == Approx(-1.880000004).margin(1e-12));
  CHECK(opt.step_count(0) == 1);
}

TEST_CASE("AdamW: 3 steps match torch.optim.AdamW's update, with and without decay",
          "[train][adamw]") {
  const std::vector<std::vector<double>> grads = {{0.3, -1.2}, {-0.7, 0.4}, {0.05, 2.0}};
  for (bool decay : {true, false}) {
    INFO("decay " << decay);
    const AdamWConfig cfg{0.01, 0.8, 0.95, 1e-6, 0.5};
    TD p = leaf({0.7, -0.4});
    AdamW<double> opt({{"w", p, decay}}, cfg);
    RefAdamW ref{cfg.lr,           cfg.beta1,   cfg.beta2, cfg.eps,
                 cfg.weight_decay, {0.7, -0.4}, {0, 0},    {0, 0}};
    for (const auto& g : grads) {
      set_grad(p, g);
      opt.step();
      ref.step(g, decay);
      CHECK(p.data()[0] == Approx(ref.p[0]).epsilon(1e-13));
      CHECK(p.data()[1] == Approx(ref.p[1]).epsilon(1e-13));
    }
  }
  // The same in float, to float precision.
  const AdamWConfig cfg{0.01, 0.8, 0.95, 1e-6, 0.5};
  Tensor pf = Tensor::from({2}, {0.7f, -0.4f});
  pf.set_requires_grad(true);
  AdamW<float> optf({{"w", pf, true}}, cfg);
  RefAdamW ref{cfg.lr,           cfg.beta1,   cfg.beta2, cfg.eps,
               cfg.weight_decay, {0.7, -0.4}, {0, 0},    {0, 0}};
  for (const auto& g : grads) {
    set_grad(pf, g);
    optf.step();
    ref.step(g, true);
  }
  CHECK(static_cast<double>(pf.data()[0]) == Approx(ref.p[0]).margin(1e-6));
  CHECK(static_cast<double>(pf.data()[1]) == Approx(ref.p[1]).margin(1e-6));
}

TEST_CASE("AdamW: every element of several large parameters follows the reference, at 1 and 2 threads",
          "[train][adamw]") {
  // The update runs over all parameters laid end to end, in thread chunks and, inside a chunk, in
  // blocks of a few hundred elements: sizes that are not multiples of either, decayed and not, so
  // an element skipped, updated twice or given its neighbour's scalars would show.
  const std::vector<int64_t> sizes = {1537, 3, 70001, 511};
  const AdamWConfig cfg{0.01, 0.8, 0.95, 1e-6, 0.5};
  for (int threads : {1, 2}) {
    INFO("threads " << threads);
    set_num_threads(threads);
    Rng rng(11);
    std::vector<TD> params;
    std::vector<OptParam<double>> list;
    std::vector<RefAdamW> refs;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<double> init(static_cast<std::size_t>(sizes[i]));
      for (double& x : init) x = rng.normal();
      params.push_back(leaf(init));
      list.push_back({std::string(1, static_cast<char>('a' + i)), params.back(), i % 2 == 0});
      refs.push_back(RefAdamW{cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, init,
                              std::vector<double>(init.size()), std::vector<double>(init.size())});
    }
    AdamW<double> opt(list, cfg);
    for (int s = 0; s < 3; ++s) {
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::vector<double> g(static_cast<std::size_t>(sizes[i]));
        for (double& x : g) x = rng.normal();
        set_grad(params[i], g);
        refs[i].step(g, i % 2 == 0);
      }
      opt.step();
    }
    double worst = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i)
      for (int64_t j = 0; j < sizes[i]; ++j)
        worst = std::max(worst, std::abs(params[i].data()[j] - refs[i].p[static_cast<std::size_t>(j)]) /
                                    (1e-3 + std::abs(refs[i].p[static_cast<std::size_t>(j)])));
    CHECK(worst < 1e-13);
  }
  set_num_threads(1);
}

TEST_CASE("AdamW: weight decay is decoupled from the gradient", "[train][adamw]") {
  // With a zero gradient the Adam update is 0 / (0 + eps) = 0: only p *= 1 - lr wd remains.
  // (L2-coupled Adam would feed wd p into the moments and move p by about lr instead.)
  TD decayed = leaf({2.0, -3.0});
  TD kept = leaf({2.0, -3.0});
  AdamW<double> opt({{"w", decayed, true}, {"b", kept, false}},
                    AdamWConfig{0.1, 0.9, 0.999, 1e-8, 0.2});
  for (int s = 0; s < 3; ++s) {
    set_grad(decayed, {0.0, 0.0});
    set_grad(kept, {0.0, 0.0});
    opt.step();
  }
  const double f = std::pow(1.0 - 0.1 * 0.2, 3);
  CHECK(decayed.data()[0] == Approx(2.0 * f).epsilon(1e-14));
  CHECK(decayed.data()[1] == Approx(-3.0 * f).epsilon(1e-14));
  CHECK(kept.data()[0] == 2.0);
  CHECK(kept.data()[1] == -3.0);
  // step(lr) overrides the configured rate (for schedules), decay included.
  set_grad(decayed, {0.0, 0.0});
  opt.step(0.5);
  CHECK(decayed.data()[0] == Approx(2.0 * f * (1.0 - 0.5 * 0.2)).epsilon(1e-14));
}

TEST_CASE("AdamW: the decay predicate chooses per parameter", "[train][adamw]") {
  Rng rng(1);
  Linear<double> l(3, 2, true, rng);
  AdamW<double> opt(named_parameters(l, "fc."), decay_matrices_only<double>, AdamWConfig{});
  REQUIRE(opt.params().size() == 2);
  CHECK(opt.params()[0].name == "fc.weight");
  CHECK(opt.params()[0].decay);
  CHECK(opt.params()[1].name == "fc.bias");
  CHECK_FALSE(opt.params()[1].decay);
  CHECK(opt.tensors()[0].same_node(l.weight));
}

TEST_CASE("AdamW: parameters without a gradient are skipped; state counted as optimizer",
          "[train][adamw]") {
  const int64_t before = memory_stats().live_of(MemCat::kOptimizer);
  {
    Tensor a = Tensor::from({3}, {1.0f, 2.0f, 3.0f});
    Tensor b = Tensor::from({5}, {1.0f, 1.0f, 1.0f, 1.0f, 1.0f});
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    AdamW<float> opt({{"a", a, true}, {"b", b, true}}, AdamWConfig{});
    CHECK(opt.state_bytes() == 0);  // lazily allocated, as torch does
    set_grad(a, {1.0, 1.0, 1.0});
    opt.step();
    CHECK(opt.step_count(0) == 1);
    CHECK(opt.step_count(1) == 0);
    CHECK(b.to_vector() == std::vector<float>(5, 1.0f));
    CHECK(opt.state_bytes() == 2 * 3 * int64_t{sizeof(float)});
    CHECK(memory_stats().live_of(MemCat::kOptimizer) - before == 2 * 3 * int64_t{sizeof(float)});

    set_grad(b, {1.0, 1.0, 1.0, 1.0, 1.0});
    opt.step();
    CHECK(opt.step_count(0) == 2);  // a still has its gradient
    CHECK(opt.step_count(1) == 1);
    CHECK(memory_stats().live_of(MemCat::kOptimizer) - before == 2 * 8 * int64_t{sizeof(float)});

    opt.zero_grad();
    CHECK_FALSE(a.has_grad());
    CHECK_FALSE(b.has_grad());
    const std::vector<float> frozen = a.to_vector();
    opt.step();
    CHECK(a.to_vector() == frozen);
    CHECK(opt.step_count(0) == 2);
  }
  CHECK(memory_stats().live_of(MemCat::kOptimizer) == before);
}

// ---- schedules ----

TEST_CASE("lr schedule: warmup then cosine hits lr at the end of warmup and min_lr at the end",
          "[train][schedule]") {
  LrSchedule s{LrScheduleKind::kCosine, 1e-3, 1e-4, 10, 111};
  CHECK(s.lr_at(0) == 0.0);
  CHECK(s.lr_at(5) == Approx(5e-4).epsilon(1e-14));
  CHECK(s.lr_at(10) == Approx(1e-3).epsilon(1e-14));
  CHECK(s.lr_at(60) == Approx((1e-3 + 1e-4) / 2).epsilon(1e-12));  // half way through the decay
  CHECK(s.lr_at(35) ==
        Approx(1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(std::numbers::pi / 4))).epsilon(1e-12));
  CHECK(s.lr_at(110) == Approx(1e-4).epsilon(1e-12));  // the last step
  CHECK(s.lr_at(500) == Approx(1e-4).epsilon(1e-12));
  for (int64_t i = 11; i < 111; ++i) CHECK(s.lr_at(i) < s.lr_at(i - 1));
}

TEST_CASE("lr schedule: linear decay and constant", "[train][schedule]") {
  LrSchedule lin{LrScheduleKind::kLinear, 2e-3, 0.0, 4, 25};
  CHECK(lin.lr_at(2) == Approx(1e-3).epsilon(1e-14));
  CHECK(lin.lr_at(4) == Approx(2e-3).epsilon(1e-14));
  CHECK(lin.lr_at(14) == Approx(1e-3).epsilon(1e-12));  // 10 of 20 decay steps
  CHECK(lin.lr_at(19) == Approx(0.5e-3).epsilon(1e-12));
  CHECK(lin.lr_at(24) == Approx(0.0).margin(1e-18));
  LrSchedule constant{LrScheduleKind::kConstant, 3e-4, 0.0, 2, 10};
  CHECK(constant.lr_at(1) == Approx(1.5e-4).epsilon(1e-14));
  CHECK(constant.lr_at(2) == 3e-4);
  CHECK(constant.lr_at(9) == 3e-4);
  LrSchedule no_warmup{LrScheduleKind::kCosine, 1.0, 0.0, 0, 3};
  CHECK(no_warmup.lr_at(0) == 1.0);
  CHECK(no_warmup.lr_at(1) == Approx(0.5).epsilon(1e-14));
  CHECK(no_warmup.lr_at(2) == Approx(0.0).margin(1e-15));
}

TEST_CASE("lr schedule: kinds by name; unknown names and bad values throw", "[train][schedule]") {
  CHECK(parse_lr_schedule("cosine", "train.lr_schedule") == LrScheduleKind::kCosine);
  CHECK(parse_lr_schedule("linear", "train.lr_schedule") == LrScheduleKind::kLinear);
  CHECK(parse_lr_schedule("constant", "train.lr_schedule") == LrScheduleKind::kConstant);
  CHECK(lr_schedule_name(LrScheduleKind::kLinear) == "linear");
  CHECK_THROWS_AS(parse_lr_schedule("cosine_with_restarts", "train.lr_schedule"), Error);
  CHECK_THROWS_WITH(parse_lr_schedule("cosin", "train.lr_schedule"),
                    Catch::Contains("train.lr_schedule") && Catch::Contains("cosin") &&
                        Catch::Contains("constant"));
  CHECK_THROWS_AS((LrSchedule{LrScheduleKind::kCosine, 1e-3, 1e-2, 0, 10}.lr_at(0)), Error);
  CHECK_THROWS_AS((LrSchedule{LrScheduleKind::kCosine, 1e-3, 0.0, 0, 0}.lr_at(0)), Error);
  CHECK_THROWS_AS((LrSchedule{LrScheduleKind::kCosine, 1e-3, 0.0, 0, 10}.lr_at(-1)), Error);
}

// ---- clipping ----

TEST_CASE("clip_grad_norm: total L2 norm, torch's scale factor, no-op below the limit",
          "[train][clip]") {
  TD a = leaf({0.0, 0.0});
  TD b = leaf({0.0});
  TD none = leaf({5.0});  // no gradient: skipped
  set_grad(a, {3.0, 4.0});
  set_grad(b, {12.0});
  const GradNormResult r = clip_grad_norm<double>({a, b, none}, 6.5);
  CHECK(r.total_norm == Approx(13.0).epsilon(1e-15));
  CHECK(r.finite);
  CHECK(r.clipped);
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad().data()[0] == Approx(3.0 * coef).epsilon(1e-15));
  CHECK(a.grad().data()[1] == Approx(4.0 * coef).epsilon(1e-15));
  CHECK(b.grad().data()[0] == Approx(12.0 * coef).epsilon(1e-15));
  CHECK_FALSE(none.has_grad());
  CHECK(grad_norm<double>({a, b}).total_norm == Approx(6.5).epsilon(1e-6));

  set_grad(a, {3.0, 4.0});
  const GradNormResult big = clip_grad_norm<double>({a}, 20.0);
  CHECK(big.total_norm == Approx(5.0).epsilon(1e-15));
  CHECK_FALSE(big.clipped);
  CHECK(a.grad().data()[0] == 3.0);
  CHECK(a.grad().data()[1] == 4.0);
}

TEST_CASE("clip_grad_norm: NaN or inf gradients are reported and left alone", "[train][clip]") {
  Tensor a = Tensor::from({2}, {0.0f, 0.0f});
  a.set_requires_grad(true);
  set_grad(a, {1.0, std::numeric_limits<double>::quiet_NaN()});
  const GradNormResult r = clip_grad_norm<float>({a}, 1.0);
  CHECK_FALSE(r.finite);
  CHECK_FALSE(r.clipped);
  CHECK(a.grad().data()[0] == 1.0f);
  set_grad(a, {std::numeric_limits<double>::infinity(), 1.0});
  CHECK_FALSE(grad_norm<float>({a}).finite);
  set_grad(a, {1e30, 1e30});  // squares overflow float; the norm is summed in double
  const GradNormResult big = grad_norm<float>({a});
  CHECK(big.finite);
  CHECK(big.total_norm == Approx(std::sqrt(2.0) * 1e30).epsilon(1e-6));
}

// ---- training sanity ----

TEST_CASE("training: a Linear regression converges with AdamW", "[train][e2e]") {
  Rng rng(3);
  const int64_t N = 64;
  const Tensor x = Tensor::randn({N, 4}, rng);
  const std::vector<float> w_true = {1.5f, -2.0f, 0.5f, 3.0f};
  std::vector<float> yv(static_cast<std::size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    float s = 0.7f;
    for (int64_t i = 0; i < 4; ++i) s += x.data()[n * 4 + i] * w_true[i];
    yv[n] = s;
  }
  const Tensor y = Tensor::from({N, 1}, yv);
  Linear<float> model(4, 1, true, rng);
  AdamW<float> opt(named_parameters(model), decay_matrices_only<float>,
                   AdamWConfig{0.1, 0.9, 0.999, 1e-8, 0.0});
  auto loss_of = [&] { return mean(square(sub(model.forward(x), y)), 0); };
  const float first = loss_of().item();
  float last = first;
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    Tensor loss = loss_of();
    loss.backward();
    opt.step();
    last = loss.item();
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < first / 100.0f);
  CHECK(model.weight.data()[3] == Approx(3.0f).margin(0.05f));
}

TEST_CASE("training: a 1-layer decoder learns to copy a pattern (loss drops 10x < 200 steps)",
          "[train][e2e]") {
  // Sequences [a b c d a b c d]: from position 3 on, the next token is the one 3 back, which the
  // block must find through attention with RoPE.
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t V = 8, C = 32, L = 4, T = 2 * L, B = 16;
  Rng rng(5);
  Embedding<float> embed(V, C, rng);
  DecoderBlockConfig dc;
  dc.attn.hidden_size = C;
  dc.attn.num_heads = 4;
  dc.attn.num_kv_heads = 2;
  dc.mlp = GatedMlpConfig{.hidden_size = C, .intermediate_size = 64};
  DecoderBlock<float> block(dc, rng);
  RMSNorm<float> norm(C);
  Linear<float> head(C, V, false, rng);

  std::vector<OptParam<float>> params;
  for (Module<float>* m : std::initializer_list<Module<float>*>{&embed, &block, &norm, &head}) {
    for (auto& [name, t] : named_parameters(*m)) params.push_back({name, t, t.ndim() >= 2});
  }
  AdamW<float> opt(std::move(params), AdamWConfig{1e-2, 0.9, 0.99, 1e-8, 0.0});
  std::vector<int64_t> pos(static_cast<std::size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = t;
  const RopeTables<float> rope = rope_tables_1d<float>(pos, 1, T, C / 4, 10000.0);
  AttnMask causal;
  causal.causal = true;

  Rng data(6);
  auto batch_loss = [&](Rng& r) {
    std::vector<int64_t> ids, targets;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> pat(static_cast<std::size_t>(L));
      for (auto& v : pat) v = r.below(V);
      for (int64_t t = 0; t < T; ++t) ids.push_back(pat[t % L]);
      for (int64_t t = 0; t < T; ++t)
        targets.push_back(t >= L - 1 && t + 1 < T ? pat[(t + 1) % L] : -100);
    }
    const Tensor h = norm.forward(block.forward(embed.forward(ids, {B, T}), &rope, causal));
    return cross_entropy(reshape(head.forward(h), {B * T, V}), targets);
  };
  const float first = batch_loss(data).item();
  float best = first;
  int steps = 0;
  while (steps < 200 && best > first / 10.0f) {
    opt.zero_grad();
    Tensor loss = batch_loss(data);
    loss.backward();
    clip_grad_norm(opt.tensors(), 1.0);
    opt.step();
    best = std::min(best, loss.item());
    ++steps;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  Rng held_out(7);
  float eval = 0.0f;
  {
    NoGradGuard no_grad;
    eval = batch_loss(held_out).item();
  }
  INFO("loss " << first << " -> " << best << " in " << steps << " steps (held-out " << eval << "), "
               << secs << " s");
  CHECK(first > 1.8f);  // about ln 8 at init
  CHECK(best < first / 10.0f);
  CHECK(eval < first / 10.0f);
  CHECK(steps < 200);
}

}  // namespace vlm
