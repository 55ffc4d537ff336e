#include "lib/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "lib/core/memory.h"
#include "lib/core/parallel.h"

namespace vlm {
namespace {
constexpr int64_t kChunk = 1 << 15;  // elements per thread chunk at least
constexpr int64_t kBlock = 512;      // elements per pass of the update: 4 arrays x 2 KiB in L1
}  // namespace

template <typename T>
bool decay_matrices_only(const std::string& /*name*/, const TensorT<T>& param) {
  return param.ndim() >= 2;
}

template <typename T>
AdamW<T>::AdamW(std::vector<OptParam<T>> params, const AdamWConfig& cfg)
    : params_(std::move(params)), state_(params_.size()), cfg_(cfg) {
  VLM_CHECK(cfg.lr >= 0.0, "AdamW: lr must be >= 0, got " << cfg.lr);
  VLM_CHECK(cfg.beta1 >= 0.0 && cfg.beta1 < 1.0 && cfg.beta2 >= 0.0 && cfg.beta2 < 1.0,
            "AdamW: betas must lie in [0, 1), got " << cfg.beta1 << ", " << cfg.beta2);
  VLM_CHECK(cfg.eps >= 0.0, "AdamW: eps must be >= 0, got " << cfg.eps);
  VLM_CHECK(cfg.weight_decay >= 0.0, "AdamW: weight_decay must be >= 0, got " << cfg.weight_decay);
  for (const auto& p : params_) {
    VLM_CHECK(p.param.defined(), "AdamW: parameter " << p.name << " is undefined");
  }
}

template <typename T>
AdamW<T>::AdamW(const std::vector<std::pair<std::string, TensorT<T>>>& params,
                const DecayPredicate<T>& decay, const AdamWConfig& cfg)
    : AdamW(
          [&] {
            std::vector<OptParam<T>> ps;
            for (const auto& [name, t] : params) ps.push_back({name, t, decay(name, t)});
            return ps;
          }(),
          cfg) {}

template <typename T>
void AdamW<T>::step() {
  step(cfg_.lr);
}

template <typename T>
void AdamW<T>::step(double lr) {
  NoGradGuard no_grad;
  // Every parameter's update, laid end to end and split over the threads as one elementwise loop:
  // a small model has dozens of small tensors, too small to split one by one.
  struct Item {
    T* w;
    const T* g;
    T* m;
    T* v;
    T step_size, bc2_sqrt, keep;
    bool decay;
    int64_t begin;  // offset in the concatenation
  };
  std::vector<Item> items;
  int64_t total = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    TensorT<T> p = params_[i].param;
    if (!p.has_grad()) continue;
    State& s = state_[i];
    if (!s.exp_avg.defined()) {
      MemCatScope scope(MemCat::kOptimizer);
      s.exp_avg = TensorT<T>::zeros(p.shape());
      s.exp_avg_sq = TensorT<T>::zeros(p.shape());
    }
    ++s.step;
    // Scalars in double, as torch computes them in Python floats.
    const double t = static_cast<double>(s.step);
    const double bias_correction1 = 1.0 - std::pow(cfg_.beta1, t);
    const double bias_correction2 = 1.0 - std::pow(cfg_.beta2, t);
    const double plr = lr * params_[i].lr_scale;
    items.push_back({p.data(), p.grad_data(), s.exp_avg.data(), s.exp_avg_sq.data(),
                     static_cast<T>(plr / bias_correction1), static_cast<T>(std::sqrt(bias_correction2)),
                     static_cast<T>(1.0 - plr * cfg_.weight_decay), params_[i].decay, total});
    total += p.numel();
  }
  const T eps = static_cast<T>(cfg_.eps);
  const T one_minus_beta1 = static_cast<T>(1.0 - cfg_.beta1);
  const T beta2 = static_cast<T>(cfg_.beta2), one_minus_beta2 = static_cast<T>(1.0 - cfg_.beta2);
  // Elementwise, so chunks over the threads change nothing in the result.
  parallel_for(total, kChunk, [&](int64_t b, int64_t e) {
    using Map = typename TensorT<T>::Map;
    using ConstMap = typename TensorT<T>::ConstMap;
    // The first item that ends past b, then every item overlapping [b, e).
    auto it = std::upper_bound(items.begin(), items.end(), b,
                               [](int64_t x, const Item& item) { return x < item.begin; });
    for (--it; it != items.end() && it->begin < e; ++it) {
      const Item& item = *it;
      const int64_t end = it + 1 != items.end() ? (it + 1)->begin : total;
      const int64_t lo = std::max(b, item.begin) - item.begin, hi = std::min(e, end) - item.begin;
      if (hi <= lo) continue;
      // In blocks that stay in L1 between the passes: one trip through memory for w, g, m, v
      // instead of one per line, and no temporary. The same operations on each element as before.
      for (int64_t b0 = lo; b0 < hi; b0 += kBlock) {
        const int64_t n = std::min(kBlock, hi - b0);
        Map w(item.w + b0, n), m(item.m + b0, n), v(item.v + b0, n);
        const ConstMap g(item.g + b0, n);
        if (item.decay) w *= item.keep;  // decoupled decay
        m += one_minus_beta1 * (g - m);  // torch lerp_
        v = v * beta2 + one_minus_beta2 * g * g;
        w -= item.step_size * (m / (v.sqrt() / item.bc2_sqrt + eps));
      }
    }
  });
}

template <typename T>
typename AdamW<T>::ParamState AdamW<T>::state(std::size_t i) const {
  VLM_CHECK(i < state_.size(), "AdamW::state: parameter " << i << " of " << state_.size());
  return ParamState{.step = state_[i].step, .exp_avg = state_[i].exp_avg, .exp_avg_sq = state_[i].exp_avg_sq};
}

template <typename T>
void AdamW<T>::set_state(std::size_t i, const ParamState& s) {
  VLM_CHECK(i < state_.size(), "AdamW::set_state: parameter " << i << " of " << state_.size());
  const std::string& name = params_[i].name;
  VLM_CHECK(s.step >= 0, "AdamW::set_state: " << name << ": negative step count " << s.step);
  State& st = state_[i];
  st.step = s.step;
  if (!s.exp_avg.defined()) {
    VLM_CHECK(!s.exp_avg_sq.defined() && s.step == 0,
              "AdamW::set_state: " << name << ": moments missing after " << s.step << " updates");
    st.exp_avg = TensorT<T>();
    st.exp_avg_sq = TensorT<T>();
    return;
  }
  const Shape& shape = params_[i].param.shape();
  VLM_CHECK(s.exp_avg.shape() == shape && s.exp_avg_sq.defined() && s.exp_avg_sq.shape() == shape,
            "AdamW::set_state: " << name << ": moments of another shape than the parameter");
  // Adopted, not copied: a checkpoint's moments are the optimizer's from here on (the caller drops
  // its handles, so the memory is counted once, under kOptimizer where the caller allocated it).
  st.exp_avg = s.exp_avg;
  st.exp_avg_sq = s.exp_avg_sq;
}

template <typename T>
void AdamW<T>::zero_grad() {
  for (auto& p : params_) p.param.zero_grad();
}

template <typename T>
std::vector<TensorT<T>> AdamW<T>::tensors() const {
  std::vector<TensorT<T>> out;
  out.reserve(params_.size());
  for (const auto& p : params_) out.push_back(p.param);
  return out;
}

template <typename T>
int64_t AdamW<T>::state_bytes() const {
  int64_t n = 0;
  for (const auto& s : state_) {
    if (s.exp_avg.defined()) n += (s.exp_avg.numel() + s.exp_avg_sq.numel()) * int64_t{sizeof(T)};
  }
  return n;
}

// ---- schedules ----

namespace {
constexpr std::pair<std::string_view, LrScheduleKind> kScheduleNames[] = {
    {"constant", LrScheduleKind::kConstant},
    {"linear", LrScheduleKind::kLinear},
    {"cosine", LrScheduleKind::kCosine},
};
}  // namespace

LrScheduleKind parse_lr_schedule(std::string_view name, std::string_view key) {
  for (const auto& [n, kind] : kScheduleNames) {
    if (n == name) return kind;
  }
  std::ostringstream os;
  os << key << ": unknown learning-rate schedule \"" << name << "\"; supported:";
  for (const auto& entry : kScheduleNames) os << ' ' << entry.first;
  throw Error(os.str());
}

std::string_view lr_schedule_name(LrScheduleKind kind) {
  for (const auto& [n, k] : kScheduleNames) {
    if (k == kind) return n;
  }
  return "?";
}

double LrSchedule::lr_at(int64_t step) const {
  VLM_CHECK(step >= 0, "lr schedule: step must be >= 0, got " << step);
  VLM_CHECK(lr >= 0.0 && min_lr >= 0.0 && min_lr <= lr,
            "lr schedule: need 0 <= min_lr <= lr, got lr " << lr << ", min_lr " << min_lr);
  VLM_CHECK(warmup_steps >= 0 && total_steps > 0,
            "lr schedule: need warmup_steps >= 0 and total_steps > 0, got "
                << warmup_steps << " and " << total_steps);
  if (step < warmup_steps) {
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (kind == LrScheduleKind::kConstant) return lr;
  const int64_t decay_steps = total_steps - 1 - warmup_steps;
  if (decay_steps <= 0) return lr;  // no step left after warmup to decay over
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  if (kind == LrScheduleKind::kLinear) return lr + (min_lr - lr) * progress;
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

// ---- clipping ----

template <typename T>
GradNormResult grad_norm(const std::vector<TensorT<T>>& params) {
  double sq = 0.0;
  for (const auto& p : params) {
    if (!p.has_grad()) continue;
    const TensorT<T> g = p.grad();
    const T* d = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) {
      const double x = static_cast<double>(d[i]);
      sq += x * x;
    }
  }
  GradNormResult r;
  r.total_norm = std::sqrt(sq);
  r.finite = std::isfinite(r.total_norm);
  return r;
}

template <typename T>
GradNormResult clip_grad_norm(const std::vector<TensorT<T>>& params, double max_norm) {
  VLM_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be > 0, got " << max_norm);
  GradNormResult r = grad_norm(params);
  if (!r.finite) return r;
  const double coef = max_norm / (r.total_norm + 1e-6);
  if (coef >= 1.0) return r;
  r.clipped = true;
  for (auto p : params) {
    if (p.has_grad()) p.grad_vec() *= static_cast<T>(coef);
  }
  return r;
}

#define VLM_INSTANTIATE_OPTIMIZER(T)                                        \
  template bool decay_matrices_only(const std::string&, const TensorT<T>&); \
  template class AdamW<T>;                                                  \
  template GradNormResult grad_norm(const std::vector<TensorT<T>>&);        \
  template GradNormResult clip_grad_norm(const std::vector<TensorT<T>>&, double);

VLM_INSTANTIATE_OPTIMIZER(float)
VLM_INSTANTIATE_OPTIMIZER(double)
#undef VLM_INSTANTIATE_OPTIMIZER

}  // namespace vlm
