// Ref: transformers 5.17 models/fuyu/{modeling,configuration}_fuyu.py,
// models/persimmon/{modeling,configuration}_persimmon.py. Spec: docs/architectures.md §2.
#include "architectures/fuyu/fuyu.h"

#include <cmath>

#include "architectures/budget.h"
#include "architectures/fuyu/fuyu_model.h"
#include "architectures/lm_side.h"
#include "lib/measure/phase.h"
#include "lib/ops/ops.h"

namespace vlm::fuyu {

FuyuConfig parse_config(const io::HfConfig& config) {
  FuyuConfig s;
  // FuyuModel builds the LM from config.text_config; without one, FuyuConfig derives it from the
  // top-level keys (same names).
  const io::HfConfig tc = config.has("text_config") ? config.sub("text_config") : config;
  if (config.has("text_config")) {
    const std::string mt = tc.get_string("model_type", "persimmon");
    if (mt != "persimmon") tc.fail("model_type", "\"" + mt + "\" is not supported (fuyu's text model is persimmon)");
  }

  const int64_t D = tc.get_int("hidden_size", 4096);
  const int64_t H = tc.get_int("num_attention_heads", 64);
  const int64_t I = tc.get_int("intermediate_size", 16384);
  const int64_t V = tc.get_int("vocab_size", 262144);
  const int64_t L = tc.get_int("num_hidden_layers", 36);
  if (D <= 0) tc.fail("hidden_size", "must be positive, got " + std::to_string(D));
  if (H <= 0 || D % H != 0)
    tc.fail("num_attention_heads", std::to_string(H) + " does not divide hidden_size " + std::to_string(D));
  if (I <= 0) tc.fail("intermediate_size", "must be positive, got " + std::to_string(I));
  if (V <= 0) tc.fail("vocab_size", "must be positive, got " + std::to_string(V));
  if (L < 0) tc.fail("num_hidden_layers", "must be >= 0, got " + std::to_string(L));
  const int64_t head_dim = D / H;

  const Act act = config_act(tc, "hidden_act", "relu2");
  const double eps = tc.get_double("layer_norm_eps", 1e-5);
  if (!(eps > 0.0)) tc.fail("layer_norm_eps", "must be positive");
  const bool qk_layernorm = tc.get_bool("qk_layernorm", true);
  // transformers initialises the Persimmon submodel from its own config, and the modules Fuyu owns
  // (vision_embed_tokens, lm_head) from FuyuConfig's.
  s.init_std = tc.get_double("initializer_range", kDefaultInitStd);
  s.top_init_std = config.get_double("initializer_range", kDefaultInitStd);

  // RoPE by the shared reader (transformers' precedence). PersimmonConfig keeps the mixin's default
  // theta 10000 (FuyuConfig's 25000 is not passed down) and a partial_rotary_factor of 0.5. The flat
  // `partial_rotary_factor` may be a stale back-compat 0.5 next to the real value in the rope dict:
  // the dict wins. Without a text_config, FuyuConfig builds one from the top-level keys but passes
  // only rope_parameters, not the flat rope_theta / partial_rotary_factor.
  RopeRules rules("fuyu", 10000.0);
  rules.default_partial_rotary_factor = 0.5;
  rules.flat_keys = config.has("text_config");
  const RopeSettings rope = read_rope(tc, rules);
  s.rope_theta = rope.theta;
  s.partial_rotary_factor = rope.partial_rotary_factor;
  const io::HfConfig rp = rope_dict(tc);
  const io::HfConfig& prf_cfg = rp.has("partial_rotary_factor") ? rp : tc;
  // Python int() truncation of head_dim * factor.
  s.rotary_ndims = static_cast<int64_t>(static_cast<double>(head_dim) * s.partial_rotary_factor);
  if (s.rotary_ndims % 2 != 0)
    prf_cfg.fail("partial_rotary_factor", "gives an odd rotary dim " + std::to_string(s.rotary_ndims) + " (head_dim " +
                                              std::to_string(head_dim) + ")");

  // Top level: the patch embedding and the placeholder id.
  s.patch_size = config.get_int("patch_size", 30);
  s.num_channels = config.get_int("num_channels", 3);
  s.image_token_id = config.get_int("image_token_id", 71011);
  if (s.patch_size <= 0) config.fail("patch_size", "must be positive");
  if (s.num_channels <= 0) config.fail("num_channels", "must be positive");
  // vision_embed_tokens maps to the top-level hidden_size; the scatter needs the text width.
  const int64_t top_D = config.get_int("hidden_size", D);
  if (top_D != D)
    config.fail("hidden_size", std::to_string(top_D) + " differs from text_config.hidden_size " + std::to_string(D) +
                                   " (the patch embeddings could not be scattered into the text embeddings)");
  if (s.image_token_id < 0 || s.image_token_id >= V)
    config.fail("image_token_id",
                std::to_string(s.image_token_id) + " is outside the vocabulary [0, " + std::to_string(V) + ")");

  DecoderLmConfig& lm = s.lm;
  lm.vocab_size = V;
  lm.num_layers = static_cast<int>(L);
  lm.init_std = s.init_std;
  lm.lm_head_init_std = s.top_init_std;
  lm.final_norm = NormConfig{NormKind::kLayerNorm, eps, true};
  lm.final_norm_name = "final_layernorm";
  // FuyuForCausalLM ties lm_head to embed_tokens only when the config asks (default false).
  lm.tie_word_embeddings = config.get_bool("tie_word_embeddings", tc.get_bool("tie_word_embeddings", false));

  DecoderBlockConfig& b = lm.block;
  b.norm = NormConfig{NormKind::kLayerNorm, eps, true};
  AttentionConfig& a = b.attn;
  a.hidden_size = D;
  a.num_heads = H;
  a.num_kv_heads = H;
  a.head_dim = head_dim;
  a.q_bias = a.k_bias = a.v_bias = a.o_bias = true;
  a.qkv_layout = QkvLayout::kFusedPerHead;
  a.qkv_name = "query_key_value";
  a.o_name = "dense";
  if (qk_layernorm) a.qk_norm = NormConfig{NormKind::kLayerNorm, eps, true};
  a.qk_norm_after_rope = false;
  a.q_norm_name = "q_layernorm";
  a.k_norm_name = "k_layernorm";
  a.init_std = s.init_std;
  MlpConfig mlp;
  mlp.hidden_size = D;
  mlp.intermediate_size = I;
  mlp.act = act;
  mlp.bias = true;
  mlp.fc1_name = "dense_h_to_4h";
  mlp.fc2_name = "dense_4h_to_h";
  mlp.init_std = s.init_std;
  b.mlp = mlp;
  return s;
}

Fuyu::Fuyu(const io::HfConfig& config, Rng& rng)
    : Fuyu(config, parse_config(config), rng) {}

Fuyu::Fuyu(const io::HfConfig& config, FuyuConfig s, Rng& rng)
    : language_model(s.lm, rng),
      vision_embed_tokens(s.patch_size * s.patch_size * s.num_channels, s.lm.block.attn.hidden_size, true, rng,
                          s.top_init_std),
      config_(config),
      cfg_(std::move(s)) {}

void Fuyu::visit(const std::string& prefix, const ParamVisitor<float>& v) {
  language_model.visit_parts(prefix + "language_model.model.", prefix + "language_model.lm_head.", v);
  vision_embed_tokens.visit(prefix + "vision_embed_tokens.", v);
}

std::vector<std::pair<std::string, std::string>> Fuyu::name_aliases() const {
  return {
      // transformers >= 4.52 module layout (FuyuForCausalLM.model.*, lm_head at the top).
      {"language_model.model.", "model.language_model."},
      {"language_model.lm_head.", "lm_head."},
      {"vision_embed_tokens.", "model.vision_embed_tokens."},
  };
}

Tensor Fuyu::image_features(const Tensor& patches) const {
  const int64_t P = vision_embed_tokens.in_features();
  VLM_CHECK(patches.ndim() >= 2 && patches.dim(-1) == P,
            "fuyu: image_patches must be [..., " << P << "] (patch_size² · num_channels = " << cfg_.patch_size << "² · "
                                                 << cfg_.num_channels << "), got " << shape_str(patches.shape()));
  const PhaseScope phase("connector");  // no vision encoder: the patch embedding is the connector
  return vision_embed_tokens.forward(patches);
}

RopeTables<float> Fuyu::rope_for(const std::vector<int64_t>& positions, int64_t Bc, int64_t T) const {
  return rope_tables_1d<float>(positions, Bc, T, cfg_.rotary_ndims, cfg_.rope_theta);
}

Fuyu::Prepared Fuyu::prepare(const Inputs& in) const {
  PromptLayout layout = prompt_layout(in, "fuyu");
  const int64_t B = layout.batch, T = layout.length, D = language_model.hidden_size();
  VLM_CHECK(B > 0 && T > 0, "fuyu: input_ids must be [B, T] with B, T > 0, got " << shape_str(in.shape("input_ids")));
  Prepared p;
  p.embeds = language_model.embed(layout.ids, {B, T});

  if (in.has("image_patches")) {
    p.features = image_features(in.floats("image_patches"));
    p.embeds = splice_placeholders(p.embeds, placeholders(layout.ids, cfg_.image_token_id), p.features, "fuyu", "image",
                                   cfg_.image_token_id,
                                   std::to_string(p.features.numel() / D) + " patch rows in image_patches " +
                                       shape_str(in.shape("image_patches")));
  }
  p.key_valid = std::move(layout.key_valid);

  if (in.has("position_ids")) {
    const Shape ps = in.shape("position_ids");
    VLM_CHECK(ps.size() == 2 && (ps[0] == B || ps[0] == 1) && ps[1] == T,
              "fuyu: position_ids must be [" << B << ", " << T << "] or [1, " << T << "], got " << shape_str(ps));
    p.positions = in.ints("position_ids");
    p.Bc = ps[0];
  } else {
    // HF FuyuModel.forward: arange(past, past + T), ignoring the attention mask.
    for (int64_t t = 0; t < T; ++t) p.positions.push_back(t);
    p.Bc = 1;
  }
  return p;
}

ForwardOutput Fuyu::forward(const Inputs& in, int64_t logits_to_keep) {
  Prepared p = prepare(in);
  const int64_t T = p.embeds.dim(1);
  const AttnMask mask = causal_mask(p.key_valid);
  ForwardOutput out;
  if (p.features.defined()) out.stages["image_features"] = p.features;
  out.stages["inputs_embeds"] = p.embeds;
  RopeTables<float> rope;
  if (has_rope()) rope = rope_for(p.positions, p.Bc, T);
  const Tensor hidden = language_model.forward(p.embeds, has_rope() ? &rope : nullptr, mask, nullptr, {}, logits_to_keep);
  out.logits = language_model.logits(hidden);
  return out;
}

std::pair<Tensor, std::unique_ptr<DecodeState>> Fuyu::prefill(const Inputs& in) {
  Prepared p = prepare(in);
  const int64_t B = p.embeds.dim(0), T = p.embeds.dim(1);
  // Each row continues after its last position (position_ids, or HF's arange).
  std::vector<int64_t> next;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = p.Bc == 1 ? 0 : b;
    next.push_back(p.positions[static_cast<std::size_t>(row * T + T - 1)] + 1);
  }
  auto state = std::make_unique<LmDecodeState>(language_model.make_cache(B), B, T, p.key_valid, std::move(next));
  const AttnMask mask = causal_mask(p.key_valid);
  RopeTables<float> rope;
  if (has_rope()) rope = rope_for(p.positions, p.Bc, T);
  const Tensor hidden = language_model.forward(p.embeds, has_rope() ? &rope : nullptr, mask, &state->cache);
  return {language_model.logits(hidden), std::move(state)};
}

Tensor Fuyu::decode(DecodeState& base, const std::vector<int64_t>& tokens) {
  LmDecodeState& st = decode_state<LmDecodeState>(base, tokens, "fuyu");
  const int64_t B = st.batch;
  // A generated image placeholder is an ordinary token here, as in HF generate (no patches after prefill).
  const Tensor embeds = language_model.embed(tokens, {B, 1});
  const AttnMask mask = st.step_mask();
  RopeTables<float> rope;
  if (has_rope()) rope = rope_for(st.next_position, B, 1);
  const Tensor hidden = language_model.forward(embeds, has_rope() ? &rope : nullptr, mask, &st.cache);
  st.advance();
  return language_model.logits(hidden);
}

Inputs Fuyu::append_tokens(const Inputs& in, const std::vector<int64_t>& tokens) const {
  Inputs out = Architecture::append_tokens(in, tokens);
  if (in.has("position_ids")) {
    const Shape ps = in.shape("position_ids");
    VLM_CHECK(ps.size() == 2 && ps[1] > 0, "fuyu: position_ids must be [B, T], got " << shape_str(ps));
    const std::vector<int64_t> v = in.ints("position_ids");
    std::vector<int64_t> w;
    for (int64_t b = 0; b < ps[0]; ++b) {
      w.insert(w.end(), v.begin() + b * ps[1], v.begin() + (b + 1) * ps[1]);
      w.push_back(v[static_cast<std::size_t>(b * ps[1] + ps[1] - 1)] + 1);
    }
    out.set_ints("position_ids", {ps[0], ps[1] + 1}, w);
  }
  return out;
}

std::vector<ModelPart> parts(const io::HfConfig& config) {
  const FuyuConfig s = parse_config(config);
  const io::HfConfig tc = config.has("text_config") ? config.sub("text_config") : config;
  const double C = static_cast<double>(s.num_channels);
  // vision_embed_tokens: one linear layer from a patch's pixels to the text width.
  const ModelPart patches{"patch embedding",
                          {{config.key_path("patch_size"), config.has("patch_size"), static_cast<double>(s.patch_size)},
                           {tc.key_path("hidden_size"), tc.has("hidden_size"),
                            static_cast<double>(s.lm.block.attn.hidden_size)}},
                          [C](const std::vector<double>& x) { return C * x[0] * x[0] * x[1]; }};
  return {lm_part(s.lm, tc), patches};
}

ImageInput image_input(const io::HfConfig& config) {
  const FuyuConfig c = parse_config(config);
  return {c.patch_size, c.num_channels, c.image_token_id};
}

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng) {
  check_param_budget(config, parts(config));
  return std::make_unique<Fuyu>(config, rng);
}

}  // namespace vlm::fuyu
