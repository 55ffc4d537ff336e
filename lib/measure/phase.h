// Wall time of the parts of a forward pass, marked where they happen. The phases are defined once,
// here, and every architecture marks the same two regions, so a latency table means the same thing
// for each of them:
//   vision    — pixels (or patches) to the vision encoder's output; an architecture without an
//               encoder has none.
//   connector — encoder output to what the language model consumes (a projector, a resampler, a
//               merger, or a patch embedding standing in for the encoder). Layers interleaved with
//               the language model's own run inside it and count as LM time.
// A runner times a whole prefill and subtracts these to get the LM's share. Where each family puts
// its marks is written beside the marks (architectures/<family>/).
// Marks cost one clock read and one FLOP-counter read each, and nothing at all when no capture is
// active. A capture also sums the FLOPs the ops counted inside each phase.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace vlm {

class PhaseCapture {
 public:
  PhaseCapture();  // starts collecting (one capture at a time, on the calling thread)
  ~PhaseCapture();
  PhaseCapture(const PhaseCapture&) = delete;
  PhaseCapture& operator=(const PhaseCapture&) = delete;
  const std::map<std::string, double>& ms() const { return ms_; }  // per phase, summed
  double ms(const std::string& phase) const;                       // 0 when it did not occur
  int64_t flops(const std::string& phase) const;                   // counted FLOPs (lib/measure/flops.h)

 private:
  friend class PhaseScope;
  std::map<std::string, double> ms_;
  std::map<std::string, int64_t> flops_;
  PhaseCapture* previous_;
};

class PhaseScope {
 public:
  explicit PhaseScope(const char* phase);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  const char* phase_;
  PhaseCapture* capture_;
  std::chrono::steady_clock::time_point start_;
  int64_t flops_start_ = 0;
};

}  // namespace vlm
