// A Qwen2VLConfig (config.json) from shared sizes: native-resolution ViT with 2-D RoPE and a patch
// merger, Qwen2 LM with M-RoPE. mrope_section splits head_dim/2 as the released 16/24/24 does
// (t gets a quarter, h and w the rest), rounded to even where possible.
#include "architectures/qwen2vl/qwen2vl.h"

namespace vlm::qwen2vl {

nlohmann::json build_config(const ModelSizes& sizes, const nlohmann::json& family_keys) {
  const ModelSizes::Text t = resolved_text(sizes);
  const ModelSizes::Vision v = resolved_vision(sizes);
  const SpecialTokens& tok = sizes.tokens;
  // Qwen2VLVisionConfig.mlp_ratio is an int in transformers 5.17 (a float fails its validation).
  if (v.intermediate_size % v.hidden_size != 0)
    throw ConfigError("qwen2vl: the vision MLP is mlp_ratio x hidden_size with an integer mlp_ratio: "
                      "model.vision.intermediate_size (" + std::to_string(v.intermediate_size) +
                      ") must be a multiple of model.vision.hidden_size (" + std::to_string(v.hidden_size) + ")");
  const int64_t half = t.hidden_size / std::max<int64_t>(1, t.num_attention_heads) / 2;
  const int64_t sec_t = half / 4;
  const int64_t sec_h = (half - sec_t) / 2;
  const int64_t sec_w = half - sec_t - sec_h;
  nlohmann::json text = {
      {"model_type", "qwen2_vl_text"},
      {"vocab_size", sizes.vocab_size},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.intermediate_size},
      {"num_hidden_layers", t.num_hidden_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"num_key_value_heads", t.num_key_value_heads},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"initializer_range", sizes.initializer_range},
      {"use_sliding_window", false},
      {"tie_word_embeddings", false},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"mrope_section", {sec_t, sec_h, sec_w}}}},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eos},
      {"pad_token_id", tok.pad},
  };
  nlohmann::json vision = {
      {"model_type", "qwen2_vl"},
      {"embed_dim", v.hidden_size},
      {"depth", v.num_hidden_layers},
      {"num_heads", v.num_attention_heads},
      {"mlp_ratio", v.intermediate_size / v.hidden_size},
      {"hidden_act", "quick_gelu"},
      {"patch_size", v.patch_size},
      {"temporal_patch_size", 2},
      {"spatial_merge_size", 2},
      {"in_channels", v.num_channels},
      {"hidden_size", t.hidden_size},
      {"initializer_range", sizes.initializer_range},
  };
  nlohmann::json config = {
      {"model_type", "qwen2_vl"},
      {"architectures", {"Qwen2VLForConditionalGeneration"}},
      {"text_config", text},
      {"vision_config", vision},
      {"image_token_id", tok.image},
      {"video_token_id", tok.image_around},  // no videos in vlmlab's tasks; a reserved id all the same
      {"vision_start_token_id", tok.vision_start},
      {"vision_end_token_id", tok.vision_end},
      {"tie_word_embeddings", false},
  };
  return apply_family_keys(std::move(config), family_keys, "qwen2vl");
}

}  // namespace vlm::qwen2vl
