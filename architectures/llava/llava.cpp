// LLaVA (HF LlavaForConditionalGeneration): CLIP vision tower -> selected hidden state(s) -> 2-layer
// projector -> masked_scatter into the placeholder rows of the token embeddings -> Llama LM.
// Spec: docs/architectures.md §1. Ref: transformers 5.17 models/llava/modeling_llava.py,
// configuration_llava.py, models/clip/modeling_clip.py, models/llama/modeling_llama.py.
#include "architectures/llava/llava.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "architectures/budget.h"
#include "architectures/lm_side.h"
#include "lib/measure/phase.h"
#include "lib/nn/clip_vision.h"
#include "lib/nn/decoder_lm.h"
#include "lib/ops/ops.h"

namespace vlm::llava {

namespace {

struct LlavaConfig {
  ClipVisionConfig vision;
  DecoderLmConfig text;
  RopeSettings rope;
  std::vector<int> feature_layers;  // indices into the L+1 CLIP hidden states, resolved to >= 0
  bool keep_cls = false;            // strategy "full"
  Act projector_act = Act::kGeluErf;
  bool projector_bias = true;
  int64_t image_token_id = 32000;
};

// The vision tower, the feature strategy and the placeholder id: what the model builds and what its
// processor sizes and lays out images by (image_input()).
void read_image_side(const io::HfConfig& cfg, LlavaConfig& c) {
  // ---- vision tower: CLIPVisionConfig (LlavaConfig's default when vision_config is absent) ----
  const io::HfConfig v = cfg.sub("vision_config");
  const bool v_default = !cfg.has("vision_config");
  const std::string v_type = v.get_string("model_type", "clip_vision_model");
  if (v_type != "clip_vision_model")
    v.fail("model_type", "vision tower \"" + v_type + "\" is not supported (only \"clip_vision_model\")");
  c.vision.hidden_size = v.get_int("hidden_size", v_default ? 1024 : 768);
  c.vision.intermediate_size = v.get_int("intermediate_size", v_default ? 4096 : 3072);
  c.vision.num_layers = static_cast<int>(v.get_int("num_hidden_layers", v_default ? 24 : 12));
  c.vision.num_heads = v.get_int("num_attention_heads", v_default ? 16 : 12);
  c.vision.patch_size = v.get_int("patch_size", v_default ? 14 : 32);
  c.vision.image_size = v.get_int("image_size", v_default ? 336 : 224);
  c.vision.num_channels = v.get_int("num_channels", 3);
  c.vision.act = config_act(v, "hidden_act", "quick_gelu");
  c.vision.layer_norm_eps = v.get_double("layer_norm_eps", 1e-5);
  // CLIPPreTrainedModel._init_weights, which transformers applies to the tower inside Llava.
  c.vision.init = ClipVisionConfig::Init::kClip;
  c.vision.initializer_range = v.get_double("initializer_range", kDefaultInitStd);
  c.vision.initializer_factor = v.get_double("initializer_factor", 1.0);
  if (c.vision.hidden_size <= 0 || c.vision.num_heads <= 0 || c.vision.hidden_size % c.vision.num_heads != 0)
    v.fail("num_attention_heads", "hidden_size " + std::to_string(c.vision.hidden_size) +
                                      " must be a positive multiple of num_attention_heads " +
                                      std::to_string(c.vision.num_heads));
  if (c.vision.patch_size <= 0 || c.vision.image_size < c.vision.patch_size)
    v.fail("patch_size", "must be positive and at most image_size (" + std::to_string(c.vision.image_size) + ")");
  if (c.vision.num_layers < 0) v.fail("num_hidden_layers", "must be >= 0");

  const std::string strategy = cfg.get_string("vision_feature_select_strategy", "default");
  if (strategy != "default" && strategy != "full")
    cfg.fail("vision_feature_select_strategy", "\"" + strategy + "\" is not supported (\"default\" or \"full\")");
  c.keep_cls = strategy == "full";
  // 5.17 stores image_token_index (image_token_id is its attribute alias).
  c.image_token_id = cfg.has("image_token_index") ? cfg.get_int("image_token_index", 32000)
                                                  : cfg.get_int("image_token_id", 32000);
}

LlavaConfig parse_config(const io::HfConfig& cfg) {
  LlavaConfig c;

  read_image_side(cfg, c);

  // ---- language model: LlamaConfig ----
  const io::HfConfig t = cfg.sub("text_config");
  const std::string t_type = t.get_string("model_type", "llama");
  if (t_type != "llama") t.fail("model_type", "language model \"" + t_type + "\" is not supported (only \"llama\")");
  const int64_t hidden = t.get_int("hidden_size", 4096);
  const int64_t heads = t.get_int("num_attention_heads", 32);
  if (hidden <= 0 || heads <= 0) t.fail("hidden_size", "hidden_size and num_attention_heads must be positive");
  const int64_t kv_heads = t.get_int("num_key_value_heads", heads);
  if (kv_heads <= 0 || heads % kv_heads != 0)
    t.fail("num_key_value_heads", std::to_string(kv_heads) + " does not divide num_attention_heads " +
                                      std::to_string(heads));
  if (!t.has("head_dim") && hidden % heads != 0)
    t.fail("num_attention_heads", "hidden_size " + std::to_string(hidden) + " is not divisible by " +
                                      std::to_string(heads) + " and there is no head_dim");
  const int64_t head_dim = t.get_int("head_dim", hidden / heads);
  if (head_dim <= 0 || head_dim % 2 != 0) t.fail("head_dim", "must be positive and even, got " + std::to_string(head_dim));
  const bool attn_bias = t.get_bool("attention_bias", false);
  const double rms_eps = t.get_double("rms_norm_eps", 1e-6);

  c.text.vocab_size = t.get_int("vocab_size", 32000);
  if (c.text.vocab_size <= 0) t.fail("vocab_size", "must be positive");
  c.text.num_layers = static_cast<int>(t.get_int("num_hidden_layers", 32));
  if (c.text.num_layers < 0) t.fail("num_hidden_layers", "must be >= 0");
  AttentionConfig& a = c.text.block.attn;
  a.hidden_size = hidden;
  a.num_heads = heads;
  a.num_kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.q_bias = a.k_bias = a.v_bias = a.o_bias = attn_bias;
  GatedMlpConfig mlp;
  mlp.hidden_size = hidden;
  mlp.intermediate_size = t.get_int("intermediate_size", 11008);
  if (mlp.intermediate_size <= 0) t.fail("intermediate_size", "must be positive");
  mlp.act = config_act(t, "hidden_act", "silu");
  mlp.bias = t.get_bool("mlp_bias", false);
  // The LM and the projector: N(0, text_config.initializer_range) (LlavaConfig has no top-level one).
  c.text.init_std = t.get_double("initializer_range", kDefaultInitStd);
  a.init_std = mlp.init_std = c.text.init_std;
  c.text.block.mlp = mlp;
  c.text.block.norm = NormConfig{NormKind::kRmsNorm, rms_eps, false};
  c.text.final_norm = c.text.block.norm;
  // LlavaConfig forwards text_config.tie_word_embeddings when its own is false.
  c.text.tie_word_embeddings = cfg.get_bool("tie_word_embeddings", false) || t.get_bool("tie_word_embeddings", false);
  c.rope = read_rope(t, RopeRules("llava", 10000.0));
  if (t.get_int("pretraining_tp", 1) != 1) t.fail("pretraining_tp", "only 1 is supported");

  // ---- feature selection and projector ----
  const int64_t n_states = c.vision.num_layers + 1;  // hidden_states[0] = embeddings after pre_layrnorm
  if (cfg.has("vision_feature_layer") && cfg.json().at("vision_feature_layer").is_array() &&
      cfg.json().at("vision_feature_layer").empty())
    cfg.fail("vision_feature_layer", "an empty list selects no features");
  for (const int64_t layer : cfg.get_int_list("vision_feature_layer", {-2})) {
    const int64_t idx = layer < 0 ? layer + n_states : layer;
    if (idx < 0 || idx >= n_states)
      cfg.fail("vision_feature_layer", "layer " + std::to_string(layer) + " is out of range for " +
                                           std::to_string(n_states) + " CLIP hidden states");
    c.feature_layers.push_back(static_cast<int>(idx));
  }
  c.projector_act = config_act(cfg, "projector_hidden_act", "gelu");
  c.projector_bias = cfg.get_bool("multimodal_projector_bias", true);
  return c;
}

class Llava : public Architecture {
  io::HfConfig config_;  // first: the modules below are built from cfg_
  LlavaConfig cfg_;

 public:
  Llava(const io::HfConfig& config, const LlavaConfig& c, Rng& rng)
      : config_(config),
        cfg_(c),
        vision_tower(c.vision, rng),
        linear_1(c.vision.hidden_size * static_cast<int64_t>(c.feature_layers.size()), c.text.block.attn.hidden_size,
                 c.projector_bias, rng, c.text.init_std),
        linear_2(c.text.block.attn.hidden_size, c.text.block.attn.hidden_size, c.projector_bias, rng,
                 c.text.init_std),
        language_model(c.text, rng) {}

  std::string_view family() const override { return "llava"; }
  const io::HfConfig& config() const override { return config_; }

  void visit(const std::string& prefix, const ParamVisitor<float>& v) override {
    // The 5.17 save_pretrained layout (legacy names); name_aliases() covers the others.
    language_model.visit_parts(prefix + "language_model.model.", prefix + "language_model.lm_head.", v);
    linear_1.visit(prefix + "multi_modal_projector.linear_1.", v);
    linear_2.visit(prefix + "multi_modal_projector.linear_2.", v);
    vision_tower.visit(prefix + "vision_tower.", v);
  }

  std::vector<std::pair<std::string, std::string>> shared_modules() const override {
    return {{"vision_tower.", "clip_vision."},
            {"language_model.model.", "llama."},
            {"language_model.lm_head.", "llama_head."}};
  }

  std::vector<std::pair<std::string, std::string>> name_aliases() const override {
    return {
        {"language_model.model.", "model.language_model."},
        {"language_model.lm_head.", "lm_head."},
        {"multi_modal_projector.", "model.multi_modal_projector."},
        {"vision_tower.", "model.vision_tower."},
        {"vision_tower.", "vision_tower.vision_model."},
        {"vision_tower.", "model.vision_tower.vision_model."},
    };
  }

  std::vector<std::pair<std::string, std::string>> component_prefixes() const override {
    return {{"vision_tower.", "vision"}, {"multi_modal_projector.", "connector"}};
  }

  ForwardOutput forward(const Inputs& in, int64_t logits_to_keep = 0) override {
    return run(in, nullptr, logits_to_keep);
  }

  std::pair<Tensor, std::unique_ptr<DecodeState>> prefill(const Inputs& in) override {
    std::unique_ptr<LmDecodeState> state;
    ForwardOutput out = run(in, &state);
    return {std::move(out.logits), std::move(state)};
  }

  Tensor decode(DecodeState& base, const std::vector<int64_t>& tokens) override {
    LmDecodeState& st = decode_state<LmDecodeState>(base, tokens, "llava");
    const AttnMask mask = st.step_mask();
    const RopeTables<float> rope = rope_tables_1d<float>(st.next_position, st.batch, 1, head_dim(), cfg_.rope.theta);
    const Tensor h = language_model.forward(language_model.embed(tokens, {st.batch, 1}), &rope, mask, &st.cache);
    st.advance();
    return language_model.logits(h);
  }

  // The projector input for pixel_values [N_img, C, H, W]: [N_img, tokens, Dv * len(layers)].
  Tensor select_features(const Tensor& pixel_values) const {
    const int deepest = *std::max_element(cfg_.feature_layers.begin(), cfg_.feature_layers.end());
    const PhaseScope phase("vision");
    const std::vector<Tensor> hs = vision_tower.forward(pixel_values, deepest);
    Tensors<float> picked;
    for (const int idx : cfg_.feature_layers) {
      const Tensor& h = hs[static_cast<std::size_t>(idx)];
      picked.push_back(cfg_.keep_cls ? h : slice(h, 1, 1, h.dim(1)));
    }
    return picked.size() == 1 ? picked[0] : concat(picked, 2);
  }

  Tensor project(const Tensor& selected) const {
    const PhaseScope phase("connector");
    return linear_2.forward(apply_act(cfg_.projector_act, linear_1.forward(selected)));
  }

  int64_t head_dim() const { return cfg_.text.block.attn.head_dim; }

  ClipVision vision_tower;
  Linear<float> linear_1, linear_2;  // multi_modal_projector
  DecoderLm language_model;

 private:
  // The forward pass; with `state`, also the cache and the state prefill leaves for decode.
  ForwardOutput run(const Inputs& in, std::unique_ptr<LmDecodeState>* state, int64_t keep_last = 0) {
    const PromptLayout p = prompt_layout(in, "llava");
    const int64_t B = p.batch, T = p.length;

    ForwardOutput out;
    Tensor h = language_model.embed(p.ids, {B, T});  // [B, T, C]
    if (in.has("pixel_values")) {
      const Tensor pixels = in.floats("pixel_values");
      const Tensor selected = select_features(pixels);
      const Tensor features = project(selected);  // [N_img, tokens, C]
      out.stages["vision_hidden_states"] = selected;
      out.stages["image_features"] = features;
      h = splice_placeholders(h, placeholders(p.ids, cfg_.image_token_id), features, "llava", "image",
                              cfg_.image_token_id,
                              std::to_string(features.dim(0)) + " image(s) give " + std::to_string(features.dim(1)) +
                                  " features each = " + std::to_string(features.dim(0) * features.dim(1)));
    }
    out.stages["inputs_embeds"] = h;

    // Positions as HF generate() makes them (prompt_layout), causal mask plus key padding.
    const AttnMask mask = causal_mask(p.key_valid);
    const RopeTables<float> rope = rope_tables_1d<float>(p.positions, B, T, head_dim(), cfg_.rope.theta);
    KvCache<float>* cache = nullptr;
    if (state) {
      *state = std::make_unique<LmDecodeState>(language_model.make_cache(B), B, T, p.key_valid, p.next_position);
      cache = &(*state)->cache;
    }
    out.logits = language_model.logits(language_model.forward(h, &rope, mask, cache, {}, keep_last));
    return out;
  }
};

}  // namespace

ImageInput image_input(const io::HfConfig& config) {
  LlavaConfig c;
  read_image_side(config, c);
  const ClipVisionConfig& v = c.vision;
  return {v.image_size, v.patch_size, v.num_channels, c.keep_cls, c.image_token_id};
}

std::vector<ModelPart> parts(const io::HfConfig& config) {
  const LlavaConfig c = parse_config(config);
  // The projector (vision width x text width, twice) is small beside either tower.
  return {lm_part(c.text, config.sub("text_config")), clip_part(c.vision, config.sub("vision_config"))};
}

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng) {
  check_param_budget(config, parts(config));
  return std::make_unique<Llava>(config, parse_config(config), rng);
}

}  // namespace vlm::llava
