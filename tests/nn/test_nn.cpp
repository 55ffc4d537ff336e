// Tests for lib/nn: activations by HF name, module forwards against naive loops written from the
// HF formulas, gradient checks of every composite (double), HF parameter names, init, KV cache.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "lib/core/memory.h"
#include "lib/core/random.h"
#include "lib/nn/activation.h"
#include "lib/measure/flops.h"
#include "lib/nn/modules.h"
#include "lib/ops/ops.h"
#include "lib/testing/gradcheck.h"

namespace vlm {
namespace {

using TD = TensorT<double>;
using Vec = std::vector<double>;
constexpr double kGradTol = 1e-6;

TD randn(const Shape& shape, uint64_t seed, double stddev = 1.0) {
  Rng rng(seed);
  return TD::randn(shape, rng, stddev);
}

// Replaces every parameter's values by N(0, stddev) (+ offset): HF's init (0.02, ones, zeros)
// would make biases and norms trivial and hide wiring mistakes.
template <typename T>
void randomize(Module<T>& m, uint64_t seed, double stddev = 0.5) {
  Rng rng(seed);
  m.visit("", [&](const std::string&, TensorT<T>& p) {
    for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] = static_cast<T>(rng.normal() * stddev);
  });
}

// Gradient check of a module w.r.t. its inputs (where differentiable) and every parameter.
template <class M, class F>
double module_grad_error(M& m, std::vector<TD> inputs, std::vector<bool> differentiable,
                         F&& forward) {
  const std::size_t n_in = inputs.size();
  for (auto& np : named_parameters<double>(m)) {
    inputs.push_back(np.second);
    differentiable.push_back(true);
  }
  auto f = [&](const std::vector<TD>& xs) {
    std::size_t k = n_in;
    m.visit("", [&](const std::string&, TD& p) { p = xs[k++]; });
    return forward(std::vector<TD>(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(n_in)));
  };
  const auto r = testing::grad_check(f, inputs, differentiable);
  INFO("worst input " << r.worst_input << " index " << r.worst_index);
  return r.max_error;
}

// ---- naive references ----

// x [N, in] -> [N, out] with a Linear's parameters.
Vec ref_linear(const Vec& x, int64_t N, const Linear<double>& l) {
  const int64_t in = l.in_features(), out = l.out_features();
  const double* w = l.weight.data();
  Vec y(static_cast<std::size_t>(N * out));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < out; ++o) {
      double s = l.bias.defined() ? l.bias.data()[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += x[n * in + i] * w[o * in + i];
      y[n * out + o] = s;
    }
  }
  return y;
}

// Row-wise norm over the last `C` values.
Vec ref_norm(const Vec& x, int64_t C, const Norm<double>& norm) {
  Vec y(x.size());
  const auto* ln = std::get_if<LayerNorm<double>>(&norm.impl);
  const auto* rms = std::get_if<RMSNorm<double>>(&norm.impl);
  for (std::size_t r = 0; r < x.size() / C; ++r) {
    const double* xr = &x[r * C];
    double mean = 0.0, var = 0.0;
    if (ln != nullptr) {
      for (int64_t c = 0; c < C; ++c) mean += xr[c];
      mean /= static_cast<double>(C);
    }
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    var /= static_cast<double>(C);
    const double eps = ln != nullptr ? ln->eps : rms->eps;
    const double* w = ln != nullptr ? ln->weight.data() : rms->weight.data();
    for (int64_t c = 0; c < C; ++c) {
      double v = (xr[c] - mean) / std::sqrt(var + eps) * w[c];
      if (ln != nullptr && ln->bias.defined()) v += ln->bias.data()[c];
      y[r * C + c] = v;
    }
  }
  return y;
}

double ref_act(Act act, double x) {
  switch (act) {
    case Act::kGeluErf:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Act::kGeluTanh:
      return 0.5 * x *
             (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case Act::kQuickGelu:
      return x / (1.0 + std::exp(-1.702 * x));
    case Act::kSilu:
      return x / (1.0 + std::exp(-x));
    case Act::kRelu:
      return std::max(x, 0.0);
    case Act::kRelu2:
      return std::max(x, 0.0) * std::max(x, 0.0);
    case Act::kTanh:
      return std::tanh(x);
    case Act::kIdentity:
      return x;
  }
  return 0.0;
}

// q/k/v as [B, T, H, D] in plain vectors, from the module's projections and layout.
struct RefHeads {
  Vec q, k, v;
};
RefHeads ref_project(const Attention<double>& a, const Vec& x, int64_t B, int64_t T,
                     const Vec* context, int64_t Tk) {
  const AttentionConfig& c = a.config();
  const int64_t H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  RefHeads r;
  if (c.qkv_layout == QkvLayout::kSeparate) {
    const Vec& kv_in = context != nullptr ? *context : x;
    r.q = ref_linear(x, B * T, *a.q_proj);
    r.k = ref_linear(kv_in, B * Tk, *a.k_proj);
    r.v = ref_linear(kv_in, B * Tk, *a.v_proj);
    return r;
  }
  const Vec y = ref_linear(x, B * T, *a.qkv);
  const int64_t W = (H + 2 * Hkv) * D;
  r.q.resize(static_cast<std::size_t>(B * T * H * D));
  r.k.resize(static_cast<std::size_t>(B * T * Hkv * D));
  r.v.resize(r.k.size());
  for (int64_t n = 0; n < B * T; ++n) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t d = 0; d < D; ++d) {
        if (c.qkv_layout == QkvLayout::kFused) {  // [Q all heads | K | V]
          r.q[(n * H + h) * D + d] = y[n * W + h * D + d];
          if (h < Hkv) {
            r.k[(n * Hkv + h) * D + d] = y[n * W + H * D + h * D + d];
            r.v[(n * Hkv + h) * D + d] = y[n * W + (H + Hkv) * D + h * D + d];
          }
        } else {  // per head [q_h | k_h | v_h]
          r.q[(n * H + h) * D + d] = y[n * W + h * 3 * D + d];
          r.k[(n * H + h) * D + d] = y[n * W + h * 3 * D + D + d];
          r.v[(n * H + h) * D + d] = y[n * W + h * 3 * D + 2 * D + d];
        }
      }
    }
  }
  return r;
}

// rotate_half RoPE over the first R dims of each head: x [B, T, Hh, D], cos/sin [Bc, T, R].
void ref_rope(Vec& x, int64_t B, int64_t T, int64_t Hh, int64_t D, const RopeTables<double>& rt) {
  const int64_t Bc = rt.cos.dim(0), R = rt.cos.dim(2), half = R / 2;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const double* cs = rt.cos.data() + ((Bc == 1 ? 0 : b) * T + t) * R;
      const double* sn = rt.sin.data() + ((Bc == 1 ? 0 : b) * T + t) * R;
      for (int64_t h = 0; h < Hh; ++h) {
        double* p = &x[((b * T + t) * Hh + h) * D];
        const Vec in(p, p + D);
        for (int64_t d = 0; d < R; ++d) {
          const double rot = d < half ? -in[d + half] : in[d - half];
          p[d] = in[d] * cs[d] + rot * sn[d];
        }
      }
    }
  }
}

// HF eager attention with the module's parameters; fully masked query rows give zeros.
Vec ref_attention(const Attention<double>& a, const Vec& x, int64_t B, int64_t T,
                  const RopeTables<double>* rope, const AttnMask& mask,
                  const Vec* context = nullptr, int64_t Tk_ctx = 0) {
  const AttentionConfig& c = a.config();
  const int64_t H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const int64_t Tk = context != nullptr ? Tk_ctx : T;
  RefHeads r = ref_project(a, x, B, T, context, Tk);
  auto norm_rope = [&](Vec& v, int64_t Tn, int64_t Hh, const std::optional<Norm<double>>& n) {
    if (n && !c.qk_norm_after_rope) v = ref_norm(v, D, *n);
    if (rope != nullptr) ref_rope(v, B, Tn, Hh, D, *rope);
    if (n && c.qk_norm_after_rope) v = ref_norm(v, D, *n);
  };
  norm_rope(r.q, T, H, a.q_norm);
  norm_rope(r.k, Tk, Hkv, a.k_norm);
  Vec heads(static_cast<std::size_t>(B * T * H * D), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / (H / Hkv);  // repeat_kv
      for (int64_t i = 0; i < T; ++i) {
        Vec s(static_cast<std::size_t>(Tk));
        std::vector<bool> ok(static_cast<std::size_t>(Tk), true);
        double mx = -1e300;
        bool any = false;
        for (int64_t j = 0; j < Tk; ++j) {
          if (mask.causal && j > i + (Tk - T)) ok[j] = false;
          if (!mask.key_valid.empty() && mask.key_valid[b * Tk + j] == 0) ok[j] = false;
          if (!mask.allowed.empty()) {
            const int64_t ab = mask.allowed_batch == 1 ? 0 : b;
            if (mask.allowed[(ab * T + i) * Tk + j] == 0) ok[j] = false;
          }
          if (!mask.segments.empty()) {  // block-diagonal: the same segment
            auto segment = [&](int64_t pos) {
              int64_t seg = 0, end = 0;
              while ((end += mask.segments[static_cast<std::size_t>(seg)]) <= pos) ++seg;
              return seg;
            };
            if (segment(i) != segment(j)) ok[j] = false;
          }
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            dot += r.q[((b * T + i) * H + h) * D + d] * r.k[((b * Tk + j) * Hkv + hk) * D + d];
          }
          s[j] = dot * c.scale;
          if (ok[j]) {
            mx = std::max(mx, s[j]);
            any = true;
          }
        }
        if (!any) continue;
        double z = 0.0;
        for (int64_t j = 0; j < Tk; ++j) z += ok[j] ? std::exp(s[j] - mx) : 0.0;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!ok[j]) continue;
          const double p = std::exp(s[j] - mx) / z;
          for (int64_t d = 0; d < D; ++d) {
            heads[((b * T + i) * H + h) * D + d] += p * r.v[((b * Tk + j) * Hkv + hk) * D + d];
          }
        }
      }
    }
  }
  return ref_linear(heads, B * T, a.o_proj);
}

void check_close(const TD& got, const Vec& want, double tol = 1e-10) {
  REQUIRE(got.numel() == static_cast<int64_t>(want.size()));
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(got.data()[i] - want[i]));
  }
  INFO("max abs diff " << worst);
  CHECK(worst <= tol);
}

RopeTables<double> rope_1d(int64_t T, int64_t rot_dim, int64_t offset = 0) {
  std::vector<int64_t> pos(static_cast<std::size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = t + offset;
  return rope_tables_1d<double>(pos, 1, T, rot_dim, 10000.0);
}

AttentionConfig gqa_config() {
  AttentionConfig c;
  c.hidden_size = 8;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.q_bias = c.k_bias = c.v_bias = true;  // as in Qwen2: no o bias
  return c;
}

std::vector<std::string> names_of(Module<double>& m, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& np : named_parameters(m, prefix)) out.push_back(np.first);
  return out;
}

}  // namespace

// ---- activations ----

TEST_CASE("parse_act maps every supported HF name to the matching function", "[nn][act]") {
  const std::vector<std::pair<std::string, Act>> cases = {
      {"gelu", Act::kGeluErf},
      {"gelu_new", Act::kGeluTanh},
      {"gelu_fast", Act::kGeluTanh},
      {"gelu_pytorch_tanh", Act::kGeluTanh},
      {"gelu_accurate", Act::kGeluTanh},
      {"quick_gelu", Act::kQuickGelu},
      {"silu", Act::kSilu},
      {"swish", Act::kSilu},
      {"relu", Act::kRelu},
      {"relu2", Act::kRelu2},
      {"tanh", Act::kTanh},
      {"linear", Act::kIdentity},
  };
  const Vec xs = {-2.5, -1.0, -0.3, 0.2, 1.0, 3.0};
  const TD x = TD::from({6}, xs);
  for (const auto& [name, act] : cases) {
    INFO("name " << name);
    const Act got = parse_act(name, "hidden_act");
    CHECK(got == act);
    Vec want;
    for (double v : xs) want.push_back(ref_act(act, v));
    check_close(apply_act(got, x), want, 1e-12);
  }
  CHECK(act_name(Act::kGeluTanh) == "gelu_new");
  CHECK(act_name(Act::kGeluErf) == "gelu");
}

TEST_CASE("gelu (erf) and gelu_new (tanh) differ at x = 1 by the known amount", "[nn][act]") {
  const TD one = TD::from({1}, {1.0});
  const double erf_v = apply_act(parse_act("gelu", "k"), one).item();
  const double tanh_v = apply_act(parse_act("gelu_new", "k"), one).item();
  CHECK(erf_v == Approx(0.8413447460685429).epsilon(1e-14));
  CHECK(tanh_v == Approx(0.8411919906082768).epsilon(1e-14));
  CHECK(erf_v - tanh_v == Approx(1.5275546026616293e-4).epsilon(1e-9));
}

TEST_CASE("parse_act rejects an unknown name, naming the key, the value and the options",
          "[nn][act]") {
  CHECK_THROWS_AS(parse_act("gelu_bogus", "text_config.hidden_act"), ConfigError);
  CHECK_THROWS_WITH(parse_act("gelu_bogus", "text_config.hidden_act"),
                    Catch::Contains("text_config.hidden_act") && Catch::Contains("gelu_bogus") &&
                        Catch::Contains("quick_gelu") && Catch::Contains("relu2"));
  CHECK_THROWS_AS(parse_act("GELU", "hidden_act"), Error);  // names are case-sensitive, as in HF
}

// ---- forwards against naive references ----

TEST_CASE("Linear, norms and Embedding forwards match the HF formulas", "[nn][forward]") {
  Rng rng(1);
  const TD x = randn({2, 3, 5}, 2);
  const Vec xv = x.to_vector();
  for (bool bias : {true, false}) {
    Linear<double> l(5, 4, bias, rng);
    randomize(l, 3);
    check_close(l.forward(x), ref_linear(xv, 6, l));
    CHECK(l.forward(x).shape() == Shape{2, 3, 4});
  }
  for (bool bias : {true, false}) {
    Norm<double> ln(5, NormConfig{NormKind::kLayerNorm, 1e-5, bias});
    randomize(ln, 4);
    check_close(ln.forward(x), ref_norm(xv, 5, ln));
  }
  Norm<double> rms(5, NormConfig{NormKind::kRmsNorm, 1e-6});
  randomize(rms, 5);
  check_close(rms.forward(x), ref_norm(xv, 5, rms));
  // The plain classes compute the same as the configurable wrapper.
  LayerNorm<double> ln_plain(5, 1e-5);
  randomize(ln_plain, 6);
  Norm<double> ln_wrapped(5, NormConfig{NormKind::kLayerNorm, 1e-5, true});
  std::get<LayerNorm<double>>(ln_wrapped.impl) = ln_plain;
  check_close(ln_plain.forward(x), ref_norm(xv, 5, ln_wrapped));

  Embedding<double> emb(7, 3, rng);
  const TD e = emb.forward({6, 0, 2, 2}, {2, 2});
  REQUIRE(e.shape() == Shape{2, 2, 3});
  const int64_t ids[] = {6, 0, 2, 2};
  Vec want;
  for (int64_t id : ids) {
    for (int64_t c = 0; c < 3; ++c) want.push_back(emb.weight.data()[id * 3 + c]);
  }
  check_close(e, want, 0.0);
  CHECK_THROWS_WITH(emb.forward({7}, {1}), Catch::Contains("out of range"));
  CHECK_THROWS_AS(emb.forward({1, 2}, {3}), Error);
}

TEST_CASE("Mlp and GatedMlp forwards match fc2(act(fc1 x)) and down(act(gate x) * up x)",
          "[nn][forward]") {
  Rng rng(7);
  const TD x = randn({2, 3, 6}, 8);
  const Vec xv = x.to_vector();
  MlpConfig mc;
  mc.hidden_size = 6;
  mc.intermediate_size = 5;
  mc.out_size = 4;  // projector-style: output width differs from input width
  mc.act = Act::kQuickGelu;
  Mlp<double> mlp(mc, rng);
  randomize(mlp, 9);
  Vec h = ref_linear(xv, 6, mlp.fc1);
  for (double& v : h) v = ref_act(Act::kQuickGelu, v);
  const TD y = mlp.forward(x);
  CHECK(y.shape() == Shape{2, 3, 4});
  check_close(y, ref_linear(h, 6, mlp.fc2));

  GatedMlpConfig gc;
  gc.hidden_size = 6;
  gc.intermediate_size = 5;
  gc.act = Act::kSilu;
  GatedMlp<double> g(gc, rng);
  randomize(g, 10);
  Vec gate = ref_linear(xv, 6, g.gate_proj);
  const Vec up = ref_linear(xv, 6, g.up_proj);
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = ref_act(Act::kSilu, gate[i]) * up[i];
  check_close(g.forward(x), ref_linear(gate, 6, g.down_proj));
}

TEST_CASE("Attention forward matches HF eager attention for every layout and option",
          "[nn][attention][forward]") {
  const int64_t B = 2, T = 4;
  const TD x = randn({B, T, 8}, 11);
  const Vec xv = x.to_vector();
  AttnMask causal;
  causal.causal = true;

  SECTION("separate q/k/v, GQA, LayerNorm q/k norm before full rope, causal") {
    AttentionConfig c = gqa_config();
    c.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    Rng rng(12);
    Attention<double> a(c, rng);
    randomize(a, 13);
    const auto rt = rope_1d(T, 4);
    check_close(a.forward(x, &rt, causal), ref_attention(a, xv, B, T, &rt, causal));
  }
  SECTION("RMSNorm q/k norm after partial rope (custom scale, names), padding mask") {
    AttentionConfig c = gqa_config();
    c.num_kv_heads = 2;
    c.qk_norm = NormConfig{NormKind::kRmsNorm, 1e-6};
    c.qk_norm_after_rope = true;
    c.scale = 0.3;
    Rng rng(14);
    Attention<double> a(c, rng);
    randomize(a, 15);
    const auto rt = rope_1d(T, 2);
    AttnMask m;
    m.causal = true;
    m.key_valid = {1, 1, 1, 1, 0, 1, 1, 1};
    check_close(a.forward(x, &rt, m), ref_attention(a, xv, B, T, &rt, m));
  }
  SECTION("fused [Q | K | V] projection with GQA") {
    AttentionConfig c = gqa_config();
    c.qkv_layout = QkvLayout::kFused;
    Rng rng(16);
    Attention<double> a(c, rng);
    randomize(a, 17);
    REQUIRE(a.qkv.has_value());
    CHECK(a.qkv->weight.shape() == Shape{16, 8});  // (2 + 2*1) heads * 4
    const auto rt = rope_1d(T, 4);
    check_close(a.forward(x, &rt, AttnMask{}), ref_attention(a, xv, B, T, &rt, AttnMask{}));
  }
  SECTION("fused per-head [q_h | k_h | v_h] projection with partial rope and q/k LayerNorm") {
    AttentionConfig c = gqa_config();
    c.num_kv_heads = 0;
    c.o_bias = true;
    c.qkv_layout = QkvLayout::kFusedPerHead;
    c.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    Rng rng(18);
    Attention<double> a(c, rng);
    randomize(a, 19);
    const auto rt = rope_1d(T, 2);
    check_close(a.forward(x, &rt, causal), ref_attention(a, xv, B, T, &rt, causal));
  }
  SECTION("cross-attention with a context of another width and a per-token mask") {
    AttentionConfig c = gqa_config();
    c.kv_input_size = 6;
    c.qk_norm = NormConfig{NormKind::kRmsNorm, 1e-6};
    Rng rng(20);
    Attention<double> a(c, rng);
    randomize(a, 21);
    CHECK(a.k_proj->weight.shape() == Shape{4, 6});
    const int64_t Tk = 3;
    const TD ctx = randn({B, Tk, 6}, 22);
    AttnMask m;
    m.allowed_batch = B;
    m.allowed.assign(static_cast<std::size_t>(B * T * Tk), 1);
    for (int64_t j = 0; j < Tk; ++j) m.allowed[0 * T * Tk + 0 * Tk + j] = 0;  // sees no key
    m.allowed[(1 * T + 2) * Tk + 1] = 0;
    const Vec cv = ctx.to_vector();
    const TD y = a.forward_cross(x, ctx, m);
    check_close(y, ref_attention(a, xv, B, T, nullptr, m, &cv, Tk));
    CHECK_THROWS_AS(a.forward(x, nullptr, AttnMask{}), Error);  // built for a 6-wide context
  }
}

TEST_CASE("DecoderBlock and VitBlock wire norm, attention, mlp and both residuals",
          "[nn][forward]") {
  const int64_t B = 2, T = 3;
  const TD x = randn({B, T, 8}, 30);
  const Vec xv = x.to_vector();
  AttnMask causal;
  causal.causal = true;
  const auto rt = rope_1d(T, 4);

  DecoderBlockConfig dc;
  dc.attn = gqa_config();
  dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
  Rng rng(31);
  DecoderBlock<double> blk(dc, rng);
  randomize(blk, 32);
  Vec h = ref_attention(blk.self_attn, ref_norm(xv, 8, blk.input_layernorm), B, T, &rt, causal);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] += xv[i];
  const auto& g = std::get<GatedMlp<double>>(blk.mlp.impl);
  const Vec hn = ref_norm(h, 8, blk.post_attention_layernorm);
  Vec gate = ref_linear(hn, B * T, g.gate_proj);
  const Vec up = ref_linear(hn, B * T, g.up_proj);
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = ref_act(Act::kSilu, gate[i]) * up[i];
  Vec want = ref_linear(gate, B * T, g.down_proj);
  for (std::size_t i = 0; i < want.size(); ++i) want[i] += h[i];
  check_close(blk.forward(x, &rt, causal), want);

  VitBlockConfig vc;
  vc.hidden_size = 8;
  vc.num_heads = 2;
  vc.intermediate_size = 12;
  VitBlock<double> vit(vc, rng);
  randomize(vit, 33);
  Norm<double> ln1(8, NormConfig{NormKind::kLayerNorm, 1e-5, true});
  Norm<double> ln2(8, NormConfig{NormKind::kLayerNorm, 1e-5, true});
  std::get<LayerNorm<double>>(ln1.impl) = vit.layer_norm1;
  std::get<LayerNorm<double>>(ln2.impl) = vit.layer_norm2;
  Vec vh = ref_attention(vit.self_attn, ref_norm(xv, 8, ln1), B, T, nullptr, AttnMask{});
  for (std::size_t i = 0; i < vh.size(); ++i) vh[i] += xv[i];
  Vec f1 = ref_linear(ref_norm(vh, 8, ln2), B * T, vit.mlp.fc1);
  for (double& v : f1) v = ref_act(Act::kQuickGelu, v);  // CLIP's default hidden_act
  Vec vwant = ref_linear(f1, B * T, vit.mlp.fc2);
  for (std::size_t i = 0; i < vwant.size(); ++i) vwant[i] += vh[i];
  check_close(vit.forward(x), vwant);
}

// ---- gradient checks (double) ----

TEST_CASE("gradcheck: Linear with and without bias", "[nn][grad]") {
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    Rng rng(40);
    Linear<double> l(5, 3, bias, rng);
    randomize(l, 41);
    CHECK(named_parameters(l).size() == (bias ? 2u : 1u));
    const double err =
        module_grad_error(l, {randn({2, 2, 5}, 42)}, {true},
                          [&](const std::vector<TD>& in) { return l.forward(in[0]); });
    CHECK(err < kGradTol);
  }
}

TEST_CASE("gradcheck: LayerNorm with and without bias, RMSNorm", "[nn][grad]") {
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    LayerNorm<double> ln(6, 1e-5, bias);
    randomize(ln, 43);
    CHECK(named_parameters(ln).size() == (bias ? 2u : 1u));
    const double err =
        module_grad_error(ln, {randn({3, 6}, 44)}, {true},
                          [&](const std::vector<TD>& in) { return ln.forward(in[0]); });
    CHECK(err < kGradTol);
  }
  RMSNorm<double> rms(6, 1e-6);
  randomize(rms, 45);
  const double err =
      module_grad_error(rms, {randn({3, 6}, 46)}, {true},
                        [&](const std::vector<TD>& in) { return rms.forward(in[0]); });
  CHECK(err < kGradTol);
}

TEST_CASE("gradcheck: Embedding (gradient w.r.t. the table, repeated ids accumulate)",
          "[nn][grad]") {
  Rng rng(47);
  Embedding<double> emb(5, 4, rng);
  randomize(emb, 48);
  const double err = module_grad_error(emb, {}, {}, [&](const std::vector<TD>&) {
    return emb.forward({1, 3, 1, 0, 4, 1}, {2, 3});
  });
  CHECK(err < kGradTol);
}

TEST_CASE("gradcheck: Mlp for each activation, GatedMlp (silu)", "[nn][grad]") {
  for (Act act : {Act::kQuickGelu, Act::kGeluErf, Act::kGeluTanh, Act::kRelu2}) {
    INFO("act " << act_name(act));
    MlpConfig c;
    c.hidden_size = 6;
    c.intermediate_size = 10;
    c.act = act;
    Rng rng(49);
    Mlp<double> mlp(c, rng);
    randomize(mlp, 50);
    const double err =
        module_grad_error(mlp, {randn({2, 3, 6}, 51)}, {true},
                          [&](const std::vector<TD>& in) { return mlp.forward(in[0]); });
    CHECK(err < kGradTol);
  }
  GatedMlpConfig gc;
  gc.hidden_size = 6;
  gc.intermediate_size = 10;
  Rng rng(52);
  GatedMlp<double> g(gc, rng);
  randomize(g, 53);
  const double err = module_grad_error(g, {randn({2, 3, 6}, 54)}, {true},
                                       [&](const std::vector<TD>& in) { return g.forward(in[0]); });
  CHECK(err < kGradTol);
}

TEST_CASE("gradcheck: self-attention with GQA, q/k norm, rope and a causal mask",
          "[nn][grad][attention]") {
  const auto rt = rope_1d(4, 4);
  AttnMask causal;
  causal.causal = true;
  for (QkvLayout layout : {QkvLayout::kSeparate, QkvLayout::kFused, QkvLayout::kFusedPerHead}) {
    INFO("layout " << static_cast<int>(layout));
    AttentionConfig c = gqa_config();
    c.qkv_layout = layout;
    if (layout == QkvLayout::kFusedPerHead) c.num_kv_heads = 2;
    c.o_bias = true;
    c.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    Rng rng(55);
    Attention<double> a(c, rng);
    randomize(a, 56);
    const double err =
        module_grad_error(a, {randn({2, 4, 8}, 57)}, {true},
                          [&](const std::vector<TD>& in) { return a.forward(in[0], &rt, causal); });
    CHECK(err < kGradTol);
  }
  AttentionConfig c = gqa_config();  // RMSNorm q/k norm after rope
  c.qk_norm = NormConfig{NormKind::kRmsNorm, 1e-6};
  c.qk_norm_after_rope = true;
  Rng rng(58);
  Attention<double> a(c, rng);
  randomize(a, 59);
  const double err =
      module_grad_error(a, {randn({2, 4, 8}, 60)}, {true},
                        [&](const std::vector<TD>& in) { return a.forward(in[0], &rt, causal); });
  CHECK(err < kGradTol);
}

TEST_CASE("gradcheck: cross-attention with a per-token mask where a query sees no key",
          "[nn][grad][attention]") {
  AttentionConfig c = gqa_config();
  c.kv_input_size = 6;
  c.qk_norm = NormConfig{NormKind::kRmsNorm, 1e-6};
  Rng rng(61);
  Attention<double> a(c, rng);
  randomize(a, 62);
  AttnMask m;
  m.allowed_batch = 2;
  m.allowed.assign(2 * 3 * 4, 1);
  for (int j = 0; j < 4; ++j) m.allowed[static_cast<std::size_t>(1 * 3 * 4 + 0 * 4 + j)] = 0;
  m.allowed[2 * 4 + 3] = 0;
  const double err = module_grad_error(
      a, {randn({2, 3, 8}, 63), randn({2, 4, 6}, 64)}, {true, true},
      [&](const std::vector<TD>& in) { return a.forward_cross(in[0], in[1], m); });
  CHECK(err < kGradTol);
  // The query that sees no key attends to nothing; o_proj has no bias, so its output is zero.
  const TD y = a.forward_cross(randn({2, 3, 8}, 65), randn({2, 4, 6}, 66), m);
  for (int64_t ch = 0; ch < 8; ++ch) CHECK(y.data()[(1 * 3 + 0) * 8 + ch] == 0.0);
}

TEST_CASE("gradcheck: DecoderBlock (Llama-style) and a LayerNorm/Mlp/per-head-fused variant",
          "[nn][grad][block]") {
  AttnMask causal;
  causal.causal = true;
  {
    DecoderBlockConfig dc;
    dc.attn = gqa_config();
    dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
    Rng rng(70);
    DecoderBlock<double> blk(dc, rng);
    randomize(blk, 71);
    const auto rt = rope_1d(3, 4);
    const double err = module_grad_error(
        blk, {randn({2, 3, 8}, 72)}, {true},
        [&](const std::vector<TD>& in) { return blk.forward(in[0], &rt, causal); });
    CHECK(err < kGradTol);
  }
  {
    DecoderBlockConfig dc;  // Persimmon-like: LayerNorm, fused per-head qkv, q/k LN, partial rope
    dc.attn = gqa_config();
    dc.attn.num_kv_heads = 2;
    dc.attn.o_bias = true;
    dc.attn.qkv_layout = QkvLayout::kFusedPerHead;
    dc.attn.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    dc.mlp = MlpConfig{.hidden_size = 8, .intermediate_size = 12, .act = Act::kRelu2};
    dc.norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    Rng rng(73);
    DecoderBlock<double> blk(dc, rng);
    randomize(blk, 74);
    const auto rt = rope_1d(3, 2);
    const double err = module_grad_error(
        blk, {randn({2, 3, 8}, 75)}, {true},
        [&](const std::vector<TD>& in) { return blk.forward(in[0], &rt, causal); });
    CHECK(err < kGradTol);
  }
}

TEST_CASE("gradcheck: VitBlock (CLIP-style) and with fused qkv, 2-D rope, block mask",
          "[nn][grad][block]") {
  VitBlockConfig vc;
  vc.hidden_size = 8;
  vc.num_heads = 2;
  vc.intermediate_size = 12;
  {
    Rng rng(80);
    VitBlock<double> vit(vc, rng);
    randomize(vit, 81);
    const double err =
        module_grad_error(vit, {randn({2, 3, 8}, 82)}, {true},
                          [&](const std::vector<TD>& in) { return vit.forward(in[0]); });
    CHECK(err < kGradTol);
  }
  {
    VitBlockConfig qc = vc;  // as in Qwen2-VL's vision blocks
    qc.qkv_layout = QkvLayout::kFused;
    qc.eps = 1e-6;
    Rng rng(83);
    VitBlock<double> vit(qc, rng);
    randomize(vit, 84);
    const auto rt = vision_rope_tables<double>({0, 0, 1, 1}, {0, 1, 0, 1}, 4, 10000.0);
    const AttnMask m = block_diagonal_mask({1, 3});
    const double err =
        module_grad_error(vit, {randn({1, 4, 8}, 85)}, {true},
                          [&](const std::vector<TD>& in) { return vit.forward(in[0], m, &rt); });
    CHECK(err < kGradTol);
  }
}

// ---- names, init, memory ----

TEST_CASE("DecoderBlock lists exactly the HF Llama names, in HF order", "[nn][names]") {
  DecoderBlockConfig dc;
  dc.attn.hidden_size = 8;
  dc.attn.num_heads = 2;
  dc.attn.num_kv_heads = 1;
  dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
  Rng rng(90);
  DecoderBlock<double> blk(dc, rng);
  const std::vector<std::string> want = {
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
      "model.layers.0.self_attn.o_proj.weight",
      "model.layers.0.mlp.gate_proj.weight",
      "model.layers.0.mlp.up_proj.weight",
      "model.layers.0.mlp.down_proj.weight",
      "model.layers.0.input_layernorm.weight",
      "model.layers.0.post_attention_layernorm.weight",
  };
  CHECK(names_of(blk, "model.layers.0.") == want);
  const auto params = named_parameters(blk, "model.layers.0.");
  CHECK(params[0].second.shape() == Shape{8, 8});  // q_proj [H*D, C]
  CHECK(params[1].second.shape() == Shape{4, 8});  // k_proj [Hkv*D, C]
  CHECK(params[3].second.shape() == Shape{8, 8});  // o_proj
  CHECK(params[4].second.shape() == Shape{6, 8});  // gate_proj [I, C]
  CHECK(params[6].second.shape() == Shape{8, 6});  // down_proj [C, I]
  CHECK(count_parameters(blk) == 64 + 32 + 32 + 64 + 48 * 3 + 8 + 8);
  CHECK(params[0].second.same_node(blk.self_attn.q_proj->weight));  // handles, not copies
}

TEST_CASE("Qwen2-style biases and Persimmon-style names come out as configured", "[nn][names]") {
  {
    DecoderBlockConfig dc;
    dc.attn = gqa_config();  // q/k/v bias, no o bias
    dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
    Rng rng(91);
    DecoderBlock<double> blk(dc, rng);
    const auto names = names_of(blk, "");
    CHECK(std::count(names.begin(), names.end(), "self_attn.q_proj.bias") == 1);
    CHECK(std::count(names.begin(), names.end(), "self_attn.k_proj.bias") == 1);
    CHECK(std::count(names.begin(), names.end(), "self_attn.v_proj.bias") == 1);
    CHECK(std::count(names.begin(), names.end(), "self_attn.o_proj.bias") == 0);
    CHECK(std::count(names.begin(), names.end(), "mlp.gate_proj.bias") == 0);
  }
  {
    DecoderBlockConfig dc;
    dc.attn.hidden_size = 8;
    dc.attn.num_heads = 2;
    dc.attn.q_bias = dc.attn.k_bias = dc.attn.v_bias = dc.attn.o_bias = true;
    dc.attn.qkv_layout = QkvLayout::kFusedPerHead;
    dc.attn.qkv_name = "query_key_value";
    dc.attn.o_name = "dense";
    dc.attn.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    dc.attn.q_norm_name = "q_layernorm";
    dc.attn.k_norm_name = "k_layernorm";
    dc.mlp = MlpConfig{.hidden_size = 8,
                       .intermediate_size = 32,
                       .act = Act::kRelu2,
                       .fc1_name = "dense_h_to_4h",
                       .fc2_name = "dense_4h_to_h"};
    dc.norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    Rng rng(92);
    DecoderBlock<double> blk(dc, rng);
    const std::vector<std::string> want = {
        "L.self_attn.query_key_value.weight", "L.self_attn.query_key_value.bias",
        "L.self_attn.dense.weight",           "L.self_attn.dense.bias",
        "L.self_attn.q_layernorm.weight",     "L.self_attn.q_layernorm.bias",
        "L.self_attn.k_layernorm.weight",     "L.self_attn.k_layernorm.bias",
        "L.mlp.dense_h_to_4h.weight",         "L.mlp.dense_h_to_4h.bias",
        "L.mlp.dense_4h_to_h.weight",         "L.mlp.dense_4h_to_h.bias",
        "L.input_layernorm.weight",           "L.input_layernorm.bias",
        "L.post_attention_layernorm.weight",  "L.post_attention_layernorm.bias",
    };
    CHECK(names_of(blk, "L.") == want);
    CHECK(blk.self_attn.qkv->weight.shape() == Shape{24, 8});
    CHECK(blk.self_attn.q_norm->forward(randn({1, 1, 2, 4}, 93)).shape() == Shape{1, 1, 2, 4});
  }
}

TEST_CASE("VitBlock lists the CLIP encoder-layer names; fused variant lists Qwen2-VL's",
          "[nn][names]") {
  VitBlockConfig vc;
  vc.hidden_size = 8;
  vc.num_heads = 2;
  vc.intermediate_size = 12;
  Rng rng(94);
  VitBlock<double> vit(vc, rng);
  std::vector<std::string> got = names_of(vit, "vision_model.encoder.layers.1.");
  std::vector<std::string> want;
  for (const char* leaf :
       {"self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
        "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2"}) {
    for (const char* p : {".weight", ".bias"}) {
      want.push_back(std::string("vision_model.encoder.layers.1.") + leaf + p);
    }
  }
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  CHECK(got == want);
  CHECK(vit.mlp.fc1.weight.shape() == Shape{12, 8});

  VitBlockConfig qc = vc;
  qc.qkv_layout = QkvLayout::kFused;
  qc.norm1_name = "norm1";
  qc.norm2_name = "norm2";
  qc.attn_name = "attn";
  qc.o_name = "proj";
  VitBlock<double> qv(qc, rng);
  const std::vector<std::string> qwant = {
      "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
      "norm1.weight",    "norm1.bias",    "mlp.fc1.weight",   "mlp.fc1.bias",
      "mlp.fc2.weight",  "mlp.fc2.bias",  "norm2.weight",     "norm2.bias",
  };
  CHECK(names_of(qv, "") == qwant);
}

TEST_CASE("parameters: HF init, requires_grad, counted as parameters, init std override",
          "[nn][init]") {
  const int64_t before = memory_stats().live_of(MemCat::kParameters);
  {
    Rng rng(95);
    Linear<float> l(200, 100, true, rng);
    CHECK(memory_stats().live_of(MemCat::kParameters) - before ==
          (200 * 100 + 100) * int64_t{sizeof(float)});
    CHECK(l.weight.requires_grad());
    CHECK(l.bias.requires_grad());
    double s = 0.0, s2 = 0.0;
    for (float w : l.weight.to_vector()) {
      s += w;
      s2 += static_cast<double>(w) * w;
    }
    const double n = 200.0 * 100.0;
    CHECK(std::abs(s / n) < 1e-3);
    CHECK(std::sqrt(s2 / n) == Approx(0.02).epsilon(0.02));
    for (float b : l.bias.to_vector()) CHECK(b == 0.0f);

    Linear<float> wide(200, 100, false, rng, 0.5);  // caller's init std
    double w2 = 0.0;
    for (float w : wide.weight.to_vector()) w2 += static_cast<double>(w) * w;
    CHECK(std::sqrt(w2 / n) == Approx(0.5).epsilon(0.02));

    LayerNorm<float> ln(4);
    for (float w : ln.weight.to_vector()) CHECK(w == 1.0f);
    for (float b : ln.bias.to_vector()) CHECK(b == 0.0f);
    RMSNorm<float> rms(4);
    for (float w : rms.weight.to_vector()) CHECK(w == 1.0f);
    CHECK(ln.weight.requires_grad());

    // Same seed, same parameters.
    Rng r1(96), r2(96);
    Linear<float> a(3, 3, false, r1), b(3, 3, false, r2);
    CHECK(a.weight.to_vector() == b.weight.to_vector());
  }
  CHECK(memory_stats().live_of(MemCat::kParameters) == before);
}

TEST_CASE("zero_grad drops every parameter gradient of a module", "[nn][init]") {
  Rng rng(97);
  Mlp<double> mlp(MlpConfig{.hidden_size = 3, .intermediate_size = 4}, rng);
  sum_all(mlp.forward(randn({2, 3}, 98))).backward();
  for (auto& np : named_parameters(mlp)) CHECK(np.second.has_grad());
  zero_grad(mlp);
  for (auto& np : named_parameters(mlp)) CHECK_FALSE(np.second.has_grad());
}

TEST_CASE("bad attention configs are rejected with a message", "[nn][attention]") {
  Rng rng(99);
  AttentionConfig c = gqa_config();
  c.num_kv_heads = 3;
  CHECK_THROWS_WITH(Attention<float>(c, rng), Catch::Contains("num_kv_heads"));
  c = gqa_config();
  c.hidden_size = 9;
  CHECK_THROWS_WITH(Attention<float>(c, rng), Catch::Contains("not divisible"));
  c = gqa_config();
  c.qkv_layout = QkvLayout::kFusedPerHead;  // GQA cannot be per-head interleaved
  CHECK_THROWS_AS(Attention<float>(c, rng), Error);
  c = gqa_config();
  c.qkv_layout = QkvLayout::kFused;
  c.o_bias = false;
  c.v_bias = false;  // one fused bias for all three
  CHECK_THROWS_WITH(Attention<float>(c, rng), Catch::Contains("one bias"));
  DecoderBlockConfig dc;
  dc.attn = gqa_config();
  dc.mlp = GatedMlpConfig{.hidden_size = 6, .intermediate_size = 4};
  CHECK_THROWS_WITH(DecoderBlock<float>(dc, rng), Catch::Contains("mlp hidden_size"));
}

// ---- KV cache ----

TEST_CASE("DecoderBlock keep_last: the last positions' outputs and every gradient equal the full forward's, "
          "with the dropped rows' feed-forward never computed",
          "[nn][block][keep]") {
  const int64_t B = 2, T = 5, keep = 2;
  AttnMask mask;
  mask.causal = true;
  mask.key_valid = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1};  // row 0 left-padded
  for (QkvLayout layout : {QkvLayout::kSeparate, QkvLayout::kFused, QkvLayout::kFusedPerHead}) {
    INFO("layout " << static_cast<int>(layout));
    DecoderBlockConfig dc;
    dc.attn = gqa_config();
    dc.attn.qkv_layout = layout;
    if (layout == QkvLayout::kFusedPerHead) {  // Persimmon-like: q/k LayerNorm before a partial rope
      dc.attn.num_kv_heads = 2;
      dc.attn.qk_norm = NormConfig{NormKind::kLayerNorm, 1e-5, true};
    }
    dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
    Rng rng(120);
    DecoderBlock<double> blk(dc, rng);
    randomize(blk, 121);
    const auto rt = rope_1d(T, layout == QkvLayout::kFusedPerHead ? 2 : 4);
    TD x_full = randn({B, T, 8}, 122), x_keep = randn({B, T, 8}, 122);
    x_full.set_requires_grad(true);
    x_keep.set_requires_grad(true);
    const TD w = randn({B, keep, 8}, 123);  // loss = sum(w * outputs of the last `keep` positions)
    const auto param_grads = [&blk] {
      Vec g;
      for (auto& [name, p] : named_parameters<double>(blk)) g.insert(g.end(), p.grad().data(), p.grad().data() + p.numel());
      return g;
    };

    const TD full = blk.forward(x_full, &rt, mask);
    const TD tail = slice(full, 1, T - keep, T);
    sum_all(mul(tail, w)).backward();
    const Vec g_full = param_grads();
    zero_grad(blk);

    const FlopScope flops;
    const TD kept = blk.forward(x_keep, &rt, mask, nullptr, 0, keep);
    const int64_t kept_flops = flops.flops();
    REQUIRE(kept.shape() == Shape{B, keep, 8});
    check_close(kept, Vec(tail.data(), tail.data() + tail.numel()), 1e-12);
    sum_all(mul(kept, w)).backward();
    const Vec g_keep = param_grads();
    REQUIRE(g_keep.size() == g_full.size());
    double worst = 0;
    for (std::size_t i = 0; i < g_full.size(); ++i) worst = std::max(worst, std::abs(g_full[i] - g_keep[i]));
    CHECK(worst < 1e-12);
    check_close(x_keep.grad(), Vec(x_full.grad().data(), x_full.grad().data() + x_full.grad().numel()), 1e-12);

    // The full forward's GEMMs minus the dropped rows' gate/up/down projections (2*3*8*6 FLOPs a row)
    // and their o_proj (2*8*8): the kept forward must not have done them.
    const FlopScope full_flops;
    { NoGradGuard no_grad; (void)blk.forward(x_full, &rt, mask); }
    CHECK(kept_flops <= full_flops.flops() - B * (T - keep) * (2 * 3 * 8 * 6 + 2 * 8 * 8));
    zero_grad(blk);
  }
  // A per-query mask or a cache has no meaning for rows that are not computed.
  DecoderBlockConfig dc;
  dc.attn = gqa_config();
  dc.mlp = GatedMlpConfig{.hidden_size = 8, .intermediate_size = 6};
  Rng rng(124);
  DecoderBlock<double> blk(dc, rng);
  AttnMask allowed;
  allowed.allowed.assign(static_cast<std::size_t>(T * T), 1);
  CHECK_THROWS_WITH(blk.forward(randn({1, T, 8}, 125), nullptr, allowed, nullptr, 0, keep),
                    Catch::Contains("keep_last"));
  KvCache<double> cache(1, 1, 1, 4, 4);
  CHECK_THROWS_WITH(blk.forward(randn({1, T, 8}, 126), nullptr, AttnMask{}, &cache, 0, keep),
                    Catch::Contains("keep_last"));
  CHECK(cache.length(0) == 0);  // refused before anything was appended
}

TEST_CASE("Attention with a KV cache: decoding token by token equals the causal forward",
          "[nn][attention][cache]") {
  const int64_t B = 2, T = 5;
  AttentionConfig c;
  c.hidden_size = 16;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.qk_norm = NormConfig{NormKind::kRmsNorm, 1e-6};
  Rng rng(100);
  DecoderBlockConfig dc;
  dc.attn = c;
  dc.mlp = GatedMlpConfig{.hidden_size = 16, .intermediate_size = 24};
  DecoderBlock<double> blk(dc, rng);
  randomize(blk, 101, 0.3);
  const TD x = randn({B, T, 16}, 102);
  AttnMask causal;
  causal.causal = true;
  NoGradGuard no_grad;

  const auto rt_full = rope_1d(T, 4);
  const TD full_attn = blk.self_attn.forward(x, &rt_full, causal);
  const TD full_blk = blk.forward(x, &rt_full, causal);

  // Prefill 2 tokens, then decode one at a time; the mask covers the cached length.
  KvCache<double> attn_cache(1, B, 2, 4, 4), blk_cache(1, B, 2, 4, 4);
  Vec got_attn, got_blk;
  got_attn.assign(static_cast<std::size_t>(B * T * 16), 0.0);
  got_blk.assign(got_attn.size(), 0.0);
  int64_t t0 = 0;
  for (int64_t len : {2, 1, 1, 1}) {
    const TD xs = slice(x, 1, t0, t0 + len);
    const auto rt = rope_1d(len, 4, t0);
    const TD ya = blk.self_attn.forward(xs, &rt, causal, &attn_cache, 0);
    const TD yb = blk.forward(xs, &rt, causal, &blk_cache, 0);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t ch = 0; ch < 16; ++ch) {
          got_attn[((b * T) + t0 + t) * 16 + ch] = ya.data()[(b * len + t) * 16 + ch];
          got_blk[((b * T) + t0 + t) * 16 + ch] = yb.data()[(b * len + t) * 16 + ch];
        }
      }
    }
    t0 += len;
  }
  CHECK(attn_cache.length(0) == T);
  check_close(full_attn, got_attn, 1e-12);
  check_close(full_blk, got_blk, 1e-12);
}

TEST_CASE("float modules run and agree with double", "[nn][float]") {
  VitBlockConfig vc;
  vc.hidden_size = 8;
  vc.num_heads = 2;
  vc.intermediate_size = 12;
  Rng rf(110), rd(110);
  VitBlock<float> vf(vc, rf);
  VitBlock<double> vd(vc, rd);
  randomize(vf, 111);
  randomize(vd, 111);
  Rng xr1(112), xr2(112);
  const Tensor xf = Tensor::randn({2, 3, 8}, xr1);
  const TD xd = TD::randn({2, 3, 8}, xr2);
  const Tensor yf = vf.forward(xf);
  const TD yd = vd.forward(xd);
  double worst = 0.0;
  for (int64_t i = 0; i < yd.numel(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(yf.data()[i]) - yd.data()[i]));
  }
  CHECK(worst < 1e-4);
}

}  // namespace vlm
