#include "lib/measure/phase.h"

#include "lib/measure/flops.h"

namespace vlm {

namespace {
thread_local PhaseCapture* g_capture = nullptr;
}  // namespace

PhaseCapture::PhaseCapture() : previous_(g_capture) { g_capture = this; }
PhaseCapture::~PhaseCapture() { g_capture = previous_; }

double PhaseCapture::ms(const std::string& phase) const {
  const auto it = ms_.find(phase);
  return it == ms_.end() ? 0.0 : it->second;
}

int64_t PhaseCapture::flops(const std::string& phase) const {
  const auto it = flops_.find(phase);
  return it == flops_.end() ? 0 : it->second;
}

PhaseScope::PhaseScope(const char* phase) : phase_(phase), capture_(g_capture) {
  if (!capture_) return;
  flops_start_ = flop_count();
  start_ = std::chrono::steady_clock::now();
}

PhaseScope::~PhaseScope() {
  if (!capture_) return;
  capture_->ms_[phase_] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  capture_->flops_[phase_] += flop_count() - flops_start_;
}

}  // namespace vlm
