// What one inference costs a Vlm: visual and LM tokens, prefill FLOPs and a decode step's FLOPs.
#pragma once

#include <cstdint>

#include "lib/data/task.h"
#include "training/vlm.h"

namespace vlm {

struct InferenceCost {
  int64_t visual_tokens = 0, lm_tokens = 0;  // of the sample's images / its whole prompt
  int64_t prefill_flops = 0, decode_flops_per_token = 0;
};
// Batch 1 on one sample: prefill, then one decode step.
InferenceCost inference_cost(Vlm& vlm, const data::Sample& sample);

}  // namespace vlm
