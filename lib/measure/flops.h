// FLOP counting: ops add the work they do (matmul 2·M·N·K, attention QKᵀ and PV) to one counter;
// a FlopScope reads how much was added while it was alive, so a caller can scope it to a phase.
#pragma once

#include <cstdint>

namespace vlm {

void add_flops(int64_t n);
int64_t flop_count();  // since process start

class FlopScope {
 public:
  FlopScope() : start_(flop_count()) {}
  int64_t flops() const { return flop_count() - start_; }

 private:
  int64_t start_;
};

}  // namespace vlm
