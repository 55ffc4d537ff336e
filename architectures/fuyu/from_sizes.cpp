// A FuyuConfig (config.json) from shared sizes: no vision encoder (model.vision contributes only its
// patch size and channels), a Persimmon LM. Persimmon has no grouped-query attention, so sizes asking
// for it are an error rather than silently ignored.
#include "architectures/fuyu/fuyu.h"

namespace vlm::fuyu {

nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys) {
  const ModelSizes::Text t = resolved_text(sizes);
  const SpecialTokens& tok = sizes.tokens;
  if (t.num_key_value_heads != t.num_attention_heads)
    throw ConfigError("fuyu: Persimmon has no grouped-query attention: model.text.num_key_value_heads (" +
                      std::to_string(t.num_key_value_heads) + ") must equal num_attention_heads (" +
                      std::to_string(t.num_attention_heads) + ")");
  nlohmann::json text = {
      {"model_type", "persimmon"},
      {"vocab_size", sizes.vocab_size},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_hidden_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"hidden_act", "relu2"},
      {"layer_norm_eps", 1e-5},
      {"qk_layernorm", true},
      {"initializer_range", sizes.initializer_range},
      {"tie_word_embeddings", false},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 25000.0}, {"partial_rotary_factor", 0.5}}},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  nlohmann::json config = {
      {"model_type", "fuyu"},
      {"architectures", {"FuyuForCausalLM"}},
      {"text_config", text},
      {"vocab_size", sizes.vocab_size},
      {"hidden_size", t.hidden_size},
      {"patch_size", sizes.vision.patch_size},
      {"num_channels", sizes.vision.num_channels},
      {"image_token_id", tok.image},
      {"initializer_range", sizes.initializer_range},  // vision_embed_tokens; text_config's is the LM's
      {"tie_word_embeddings", false},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  return apply_family_keys(std::move(config), family_keys, "fuyu");
}

}  // namespace vlm::fuyu
