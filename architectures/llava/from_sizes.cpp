// A LlavaConfig (config.json) from shared sizes: CLIP vision tower + Llama LM, every key the family
// reads written out, so an experiment's resolved config is complete and opens in transformers.
#include "architectures/llava/llava.h"

namespace vlm::llava {

nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys) {
  const ModelSizes::Text t = resolved_text(sizes);
  const ModelSizes::Vision v = resolved_vision(sizes);
  const SpecialTokens& tok = sizes.tokens;
  nlohmann::json text = {
      {"model_type", "llama"},
      {"vocab_size", sizes.vocab_size},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_hidden_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"num_key_value_heads", t.num_key_value_heads},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"initializer_range", sizes.initializer_range},
      {"tie_word_embeddings", false},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  nlohmann::json vision = {
      {"model_type", "clip_vision_model"},
      {"hidden_size", v.hidden_size},
      {"intermediate_size", v.intermediate_size},
      {"num_hidden_layers", v.num_hidden_layers},
      {"num_attention_heads", v.num_attention_heads},
      {"patch_size", v.patch_size},
      {"image_size", v.image_size},
      {"num_channels", v.num_channels},
      {"hidden_act", "quick_gelu"},
      {"layer_norm_eps", 1e-5},
      {"initializer_range", sizes.initializer_range},
      {"initializer_factor", 1.0},
  };
  nlohmann::json config = {
      {"model_type", "llava"},
      {"architectures", {"LlavaForConditionalGeneration"}},
      {"text_config", text},
      {"vision_config", vision},
      {"image_token_index", tok.image},
      {"projector_hidden_act", "gelu"},
      {"multimodal_projector_bias", true},
      // HF's default is -2 (the penultimate CLIP layer of a pretrained tower); a tower trained from
      // scratch uses its last layer, or the deepest layer would get no gradient.
      {"vision_feature_layer", -1},
      {"vision_feature_select_strategy", "default"},
      {"tie_word_embeddings", false},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  return apply_family_keys(std::move(config), family_keys, "llava");
}

}  // namespace vlm::llava
