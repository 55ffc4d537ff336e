// AdamW with torch.optim.AdamW semantics, learning-rate schedules, and gradient-norm clipping with
// torch's clip_grad_norm_ formula. Optimizer state is counted under MemCat::kOptimizer.
// Ref: torch/optim/adamw.py (_single_tensor_adam with decoupled decay),
// torch/nn/utils/clip_grad.py.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/core/tensor.h"

namespace vlm {

template <typename T>
struct OptParam {
  std::string name;
  TensorT<T> param;
  bool decay = true;  // apply weight decay to this parameter
  // This parameter's learning rate is lr_scale x the step's (its decay too: torch's per-group lr, as
  // HF and prismatic give the vision tower 0.1x).
  double lr_scale = 1.0;
};

struct AdamWConfig {  // torch defaults
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

template <typename T>
using DecayPredicate = std::function<bool(const std::string& name, const TensorT<T>& param)>;

// The usual choice (nanoGPT, HF Trainer in effect): decay matrices, not biases or norm weights.
template <typename T>
bool decay_matrices_only(const std::string& name, const TensorT<T>& param);

template <typename T>
class AdamW {
 public:
  AdamW(std::vector<OptParam<T>> params, const AdamWConfig& cfg);
  // Every (name, tensor), decayed where decay(name, tensor) is true.
  AdamW(const std::vector<std::pair<std::string, TensorT<T>>>& params,
        const DecayPredicate<T>& decay, const AdamWConfig& cfg);

  // One update at config().lr, or at `lr` (a schedule's value). Parameters with no gradient
  // are skipped and their step count does not advance (as torch does for grad None).
  void step();
  void step(double lr);
  void zero_grad();  // drops every gradient (torch's set_to_none)

  const AdamWConfig& config() const { return cfg_; }
  const std::vector<OptParam<T>>& params() const { return params_; }
  std::vector<TensorT<T>> tensors() const;  // the parameter handles, e.g. for clip_grad_norm
  int64_t step_count(std::size_t i) const { return state_[i].step; }  // updates of parameter i
  int64_t state_bytes() const;  // bytes of exp_avg + exp_avg_sq allocated so far

  // The state of parameter i, for a checkpoint: its update count and moments (undefined tensors
  // before its first update; the optimizer's own tensors, which the next step changes in place).
  // set_state puts back what state() gave, so training continues with the same bits; it adopts the
  // moments (no copy), which must have the parameter's shape.
  struct ParamState {
    int64_t step = 0;
    TensorT<T> exp_avg, exp_avg_sq;
  };
  ParamState state(std::size_t i) const;
  void set_state(std::size_t i, const ParamState& s);

 private:
  struct State {
    TensorT<T> exp_avg, exp_avg_sq;  // allocated at the parameter's first update
    int64_t step = 0;
  };
  std::vector<OptParam<T>> params_;
  std::vector<State> state_;
  AdamWConfig cfg_;
};

// ---- learning-rate schedules ----

enum class LrScheduleKind { kConstant, kLinear, kCosine };
// "constant", "linear" or "cosine"; anything else throws naming `key` and the value.
LrScheduleKind parse_lr_schedule(std::string_view name, std::string_view key);
std::string_view lr_schedule_name(LrScheduleKind kind);

// Linear warmup from 0, then constant, or a linear / cosine decay to min_lr. `step` is the
// 0-based index of the update: lr_at(0) = 0 when warming up, lr_at(warmup_steps) = lr, and
// lr_at(total_steps - 1) = min_lr (the last update) for the decaying kinds; later steps stay there.
struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::kCosine;
  double lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double lr_at(int64_t step) const;
};

// ---- gradient clipping ----

struct GradNormResult {
  double total_norm = 0.0;  // L2 over every gradient, before clipping
  bool finite = true;       // false: NaN or inf somewhere; gradients were left untouched
  bool clipped = false;     // gradients were scaled
};

// L2 norm of all gradients (in double, in the order given; parameters without a gradient are
// skipped). If finite, gradients are multiplied by min(1, max_norm / (total + 1e-6)), torch's
// clip_grad_norm_ (so a norm just under max_norm is still scaled by a hair, as there).
template <typename T>
GradNormResult clip_grad_norm(const std::vector<TensorT<T>>& params, double max_norm);
// The same norm, without clipping.
template <typename T>
GradNormResult grad_norm(const std::vector<TensorT<T>>& params);

}  // namespace vlm
