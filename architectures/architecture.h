// The one interface every family implements: HF processor outputs (Inputs) in, logits out, with a
// KV-cached prefill/decode path. What is written once on top of it lives beside it: the registry
// (registry.h), loading and saving HF folders (pretrained.h), greedy generation (generate.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "architectures/inputs.h"
#include "lib/core/tensor.h"
#include "lib/io/hf_config.h"
#include "lib/nn/modules.h"

namespace vlm {

struct ForwardOutput {
  Tensor logits;  // [B, T, V]; [B, logits_to_keep, V] when forward() was asked for the last positions only
  // Stages a parity check can compare, under the fixture names (image_features, video_features,
  // vision_hidden_states, inputs_embeds, gated_xattn_out_<j>, ...). Fill what is natural.
  std::map<std::string, Tensor> stages;
  std::vector<int64_t> position_ids;  // families with computed positions (M-RoPE: [3, B, T] flat)
  Shape position_shape;
};

// Whatever a family keeps between decode steps (KV cache, positions, cross-attention state). Every
// family's is LmDecodeState (architectures/lm_side.h) or a subclass of it.
class DecodeState {
 public:
  virtual ~DecodeState() = default;
};

class Architecture : public Module<float> {
 public:
  virtual std::string_view family() const = 0;
  virtual const io::HfConfig& config() const = 0;  // the HF config it was built from

  // Full forward over the whole sequence, no cache. logits_to_keep > 0 (HF's argument of that
  // name): logits [B, logits_to_keep, V] for the last positions only (the training loss needs no
  // others); the LM's last layer then computes the other positions' keys and values only.
  virtual ForwardOutput forward(const Inputs& in, int64_t logits_to_keep = 0) = 0;
  // The prompt's logits [B, T, V] and the state to continue from.
  virtual std::pair<Tensor, std::unique_ptr<DecodeState>> prefill(const Inputs& in) = 0;
  // One new token per row -> logits [B, 1, V].
  virtual Tensor decode(DecodeState& state, const std::vector<int64_t>& tokens) = 0;
  // `in` with one more token per row appended (generation without a cache). The default extends
  // input_ids, attention_mask (1) and mm_token_type_ids (0); a family with more per-token inputs
  // overrides it.
  virtual Inputs append_tokens(const Inputs& in, const std::vector<int64_t>& tokens) const;
  // Other names transformers accepts for the same weights: (prefix in our names, prefix in the file).
  virtual std::vector<std::pair<std::string, std::string>> name_aliases() const { return {}; }
  // (name prefix, component) pairs, first match wins: which parameters are the "vision" encoder and
  // which the "connector"; every other parameter is "lm". For the parameter budget.
  virtual std::vector<std::pair<std::string, std::string>> component_prefixes() const = 0;
  // (name prefix, shared name prefix): where a family holds the same HF module as other families under
  // another prefix (llava's and IDEFICS's CLIP towers, the Llama LMs of llava, flamingo and qwen2vl),
  // both map to one shared name, so init_from can move a tower or an LM between families. A parameter
  // no prefix matches keeps its own name.
  virtual std::vector<std::pair<std::string, std::string>> shared_modules() const { return {}; }
};

// "vision", "connector" or "lm" for a parameter name, by the family's component_prefixes().
std::string component_of(const Architecture& arch, const std::string& param_name);

}  // namespace vlm
