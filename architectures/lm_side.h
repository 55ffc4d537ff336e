// The LM side every family shares, written once: the RoPE settings of a text config, the prompt's
// key padding and HF positions from its attention_mask, the splice of visual features into the
// placeholder rows of the token embeddings, and the state a decode step continues from. A family
// writes its vision side, its connector and its config reader, and hands the LM what these build
// (docs/architectures.md, "The shared LM side").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "architectures/architecture.h"
#include "lib/io/hf_config.h"
#include "lib/nn/decoder_lm.h"

namespace vlm {

// ---- RoPE settings ----

// What a family's RoPE takes from a text config, resolved with transformers' precedence (5.x,
// RotaryEmbeddingConfigMixin.convert_rope_params_to_dict and standardize_rope_params):
//   1. the rope dict is `rope_scaling` when it is a non-empty object (the legacy name wins:
//      `rope_scaling or rope_parameters`), else `rope_parameters`; the other one is not read at all;
//   2. rope_theta: the dict's, else the flat `rope_theta` beside it, else the model's default theta;
//   3. partial_rotary_factor: the dict's, else the flat key, else the family's default;
//   4. the type: the dict's rope_type, else its legacy `type`, else "default".
// So one config.json gives every family the same theta.
struct RopeSettings {
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;
  std::vector<int64_t> mrope_section;  // the dict's, or the rules' default; only where rules.mrope
  std::string dict_key;                // "rope_scaling" or "rope_parameters": where errors point
};

struct RopeRules {
  RopeRules(std::string_view family_name, double theta) : family(family_name), default_theta(theta) {}
  std::string_view family;             // for messages
  double default_theta = 10000.0;      // the text config class's default_theta
  double default_partial_rotary_factor = 1.0;
  // Whether the flat rope_theta / partial_rotary_factor beside the dict are read (FuyuConfig without
  // a text_config passes only rope_parameters down to the text model).
  bool flat_keys = true;
  // M-RoPE (qwen2vl): "mrope" also names the default RoPE, and mrope_section is read from the dict.
  bool mrope = false;
  std::vector<int64_t> default_mrope_section;
};

// Reads and validates them from `text` (the config holding the LM's keys). Only the default RoPE is
// implemented: any other type is a ConfigError naming its key, and so are a theta <= 0, a partial
// factor outside [0, 1] and a rope dict that is not an object.
RopeSettings read_rope(const io::HfConfig& text, const RopeRules& rules);
// The rope dict transformers reads (rule 1 above), as a config to read from (empty when neither).
io::HfConfig rope_dict(const io::HfConfig& text);

// ---- Prompt layout: key padding and positions ----

// What a prompt's input_ids and attention_mask give the LM.
struct PromptLayout {
  int64_t batch = 0, length = 0;
  std::vector<int64_t> ids;        // input_ids [B, T]
  std::vector<uint8_t> key_valid;  // [B, T], 1 = a real token; empty when every token is real
  // HF generate()'s positions: cumsum(attention_mask) - 1, with padding at 1 (arange without
  // padding). What llava and flamingo feed their 1-D RoPE; fuyu and qwen2vl make their own.
  std::vector<int64_t> positions;      // [B, T]
  std::vector<int64_t> next_position;  // [B]: the real tokens of each row, the first decode position
};

// input_ids [B, T] and the optional attention_mask (which must have its shape), read once.
PromptLayout prompt_layout(const Inputs& in, std::string_view family);

// The decoder's self-attention mask: causal, plus key padding where there is any.
AttnMask causal_mask(const std::vector<uint8_t>& key_valid);

// ---- The placeholder splice ----

// The placeholder rows of ids [B*T] (masked_scatter's mask) and how many there are.
struct Placeholders {
  std::vector<uint8_t> rows;
  int64_t count = 0;
};
Placeholders placeholders(const std::vector<int64_t>& ids, int64_t token_id);

// HF's masked_scatter of features (rows of C values: [N, C] or [N_img, tokens, C]) into the rows of
// embeds ([B, T, C] or [B*T, C]; the result has its shape) that `at` marks, in row-major (batch,
// sequence) order. The placeholder count must equal the feature rows, as transformers'
// get_placeholder_mask checks; otherwise an error "<family>: <kind> features and <kind> tokens do not
// match: <n> <kind> tokens (id <token_id>) in input_ids, <features_what>".
Tensor splice_placeholders(const Tensor& embeds, const Placeholders& at, const Tensor& features,
                           std::string_view family, std::string_view kind, int64_t token_id,
                           const std::string& features_what);

// ---- Decode state ----

// What prefill leaves for decode in every family: the KV cache, the key padding so far and each
// row's next position. A family with more (flamingo's cross-attention keys) derives from it.
class LmDecodeState : public DecodeState {
 public:
  LmDecodeState(KvCache<float> c, int64_t batch, int64_t length, std::vector<uint8_t> key_valid,
                std::vector<int64_t> next_position);

  // The mask of one decode step: one real key appended to every row (key padding stays empty while
  // every key is real).
  AttnMask step_mask();
  // After the step: every row one position further.
  void advance();

  KvCache<float> cache;
  int64_t batch = 0;
  int64_t length = 0;                  // keys cached per row
  std::vector<uint8_t> key_valid;      // [batch, length]; empty while every key is real
  std::vector<int64_t> next_position;  // [batch]
};

// The family's state from prefill, checked for a batch of `tokens` (an error naming `family`
// otherwise).
template <typename State>
State& decode_state(DecodeState& base, const std::vector<int64_t>& tokens, std::string_view family) {
  auto* st = dynamic_cast<State*>(&base);
  VLM_CHECK(st != nullptr, family << " decode: the state does not come from " << family << " prefill");
  VLM_CHECK(static_cast<int64_t>(tokens.size()) == st->batch,
            family << " decode: " << tokens.size() << " tokens for a batch of " << st->batch);
  return *st;
}

}  // namespace vlm
