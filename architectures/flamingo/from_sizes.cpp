// An IdeficsConfig (config.json) from shared sizes: CLIP-copy tower, Perceiver resampler, gated
// cross-attention before every cross_layer_interval-th Llama layer. IDEFICS has no grouped-query
// attention, so sizes asking for it are an error rather than silently ignored.
#include "architectures/flamingo/flamingo.h"

namespace vlm::flamingo {

nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys) {
  const ModelSizes::Text t = resolved_text(sizes);
  const ModelSizes::Vision v = resolved_vision(sizes);
  const SpecialTokens& tok = sizes.tokens;
  if (t.num_key_value_heads != t.num_attention_heads)
    throw ConfigError("flamingo: IDEFICS has no grouped-query attention: model.text.num_key_value_heads (" +
                      std::to_string(t.num_key_value_heads) + ") must equal num_attention_heads (" +
                      std::to_string(t.num_attention_heads) + ")");
  nlohmann::json vision = {
      {"embed_dim", v.hidden_size},
      {"intermediate_size", v.intermediate_size},
      {"num_hidden_layers", v.num_hidden_layers},
      {"num_attention_heads", v.num_attention_heads},
      {"patch_size", v.patch_size},
      {"image_size", v.image_size},
      {"num_channels", v.num_channels},
      {"hidden_act", "gelu"},
      {"layer_norm_eps", 1e-5},
      {"initializer_range", sizes.initializer_range},
  };
  nlohmann::json perceiver = {
      {"use_resampler", true},
      {"resampler_n_latents", 16},
      {"resampler_depth", 2},
      {"resampler_n_heads", v.num_attention_heads},
      {"resampler_head_dim", v.hidden_size / std::max<int64_t>(1, v.num_attention_heads)},
      {"qk_layer_norms_perceiver", false},
  };
  nlohmann::json config = {
      {"model_type", "idefics"},
      {"architectures", {"IdeficsForVisionText2Text"}},
      {"vocab_size", sizes.vocab_size},
      {"additional_vocab_size", 0},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_hidden_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"initializer_range", sizes.initializer_range},
      {"alpha_initializer", "zeros"},
      {"alphas_initializer_range", 0.0},
      {"alpha_type", "float"},
      {"cross_layer_interval", 1},
      {"qk_layer_norms", false},
      {"use_resampler", true},
      {"tie_word_embeddings", false},
      {"vision_config", vision},
      {"perceiver_config", perceiver},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  nlohmann::json out = apply_family_keys(std::move(config), family_keys, "flamingo");
  out["perceiver_config"]["use_resampler"] = out["use_resampler"];  // one switch, both places HF keeps it
  return out;
}

}  // namespace vlm::flamingo
