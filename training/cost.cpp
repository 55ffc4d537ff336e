#include "training/cost.h"

#include "lib/measure/flops.h"

namespace vlm {

InferenceCost inference_cost(Vlm& vlm, const data::Sample& sample) {
  NoGradGuard no_grad;
  InferenceCost c;
  for (const data::Image& im : sample.images) c.visual_tokens += vlm.processor().image_cost(im.height, im.width).visual_tokens;
  const std::vector<MultimodalSample> rows{vlm.prompt(sample)};
  const Inputs in = vlm.processor().make_inputs(rows);
  c.lm_tokens = in.shape("input_ids").at(1);
  const FlopScope prefill;
  auto [logits, state] = vlm.model().prefill(in);
  c.prefill_flops = prefill.flops();
  const FlopScope decode;
  vlm.model().decode(*state, {vlm.vocab().id(sample.answer.at(0))});
  c.decode_flops_per_token = decode.flops();
  return c;
}

}  // namespace vlm
