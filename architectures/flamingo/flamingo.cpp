// The flamingo family: HF IdeficsForVisionText2Text (transformers 5.17).
//   pixel_values [B, N_img, C, H, W] -> CLIP-copy vision tower (last_hidden_state, CLS kept, no
//   post_layernorm) -> Perceiver resampler (if use_resampler) -> image states [B, N_img*L, Dv];
//   text: Llama-style LM (RMSNorm, 1-D RoPE, gated MLP) with a gated cross-attention layer before
//   decoder layers 0, interval, 2*interval, ...; each token attends to the images its row of
//   image_attention_mask [B, T, N_img] allows (the processor allows only its most recent image),
//   and a token with no image gets exactly 0 from cross-attention.
// Spec: docs/flamingo.md §4. Ref: models/idefics/{modeling_idefics,perceiver,
// vision,configuration_idefics}.py.
#include "architectures/flamingo/flamingo.h"

#include <optional>

#include "architectures/budget.h"
#include "architectures/flamingo/gated_xattn.h"
#include "architectures/flamingo/perceiver_resampler.h"
#include "architectures/lm_side.h"
#include "lib/measure/phase.h"
#include "lib/nn/clip_vision.h"
#include "lib/nn/decoder_lm.h"
#include "lib/ops/ops.h"

namespace vlm::flamingo {

namespace {

// ---- config ----

struct FlamingoConfig {
  DecoderLmConfig lm;
  int64_t additional_vocab = 0;
  ClipVisionConfig vision;
  bool use_resampler = false;
  PerceiverConfig perceiver;
  GatedXattnConfig xattn;
  int interval = 1;
  int num_cross_layers = 0;
  RopeSettings rope;
  int64_t head_dim = 0;
};

// The vision tower and the resampler (vision_config, use_resampler, perceiver_config): what the
// model builds and what its processor sizes images and cross-attention keys by (image_input()).
void read_vision_side(const io::HfConfig& c, double init_std, FlamingoConfig& f) {
  const io::HfConfig v = c.sub("vision_config");
  ClipVisionConfig& vc = f.vision;
  vc.hidden_size = v.has("embed_dim") ? v.get_int("embed_dim", 768) : v.get_int("hidden_size", 768);
  vc.intermediate_size = v.get_int("intermediate_size", 5120);
  vc.num_layers = static_cast<int>(v.get_int("num_hidden_layers", 32));
  vc.num_heads = v.get_int("num_attention_heads", 16);
  vc.patch_size = v.get_int("patch_size", 14);
  vc.image_size = v.get_int("image_size", 224);
  vc.num_channels = v.get_int("num_channels", 3);
  vc.act = config_act(v, "hidden_act", "gelu");
  vc.layer_norm_eps = v.get_double("layer_norm_eps", 1e-5);
  // IdeficsPreTrainedModel._init_weights: every matrix N(0, the top-level initializer_range, not
  // vision_config's), the class token N(0, 1).
  vc.init = ClipVisionConfig::Init::kUniform;
  vc.initializer_range = init_std;
  vc.class_std = 1.0;
  if (vc.hidden_size <= 0) v.fail("embed_dim", "must be positive");
  if (vc.num_heads <= 0 || vc.hidden_size % vc.num_heads != 0)
    v.fail("num_attention_heads", "must divide embed_dim (" + std::to_string(vc.hidden_size) + ")");
  if (vc.patch_size <= 0 || vc.image_size < vc.patch_size)
    v.fail("patch_size", "must be positive and at most image_size (" + std::to_string(vc.image_size) + ")");

  f.use_resampler = c.get_bool("use_resampler", false);  // the top-level flag is the one HF reads
  const io::HfConfig p = c.sub("perceiver_config");
  PerceiverConfig& pc = f.perceiver;
  pc.embed_dim = vc.hidden_size;
  pc.depth = static_cast<int>(p.get_int("resampler_depth", 6));
  pc.n_heads = p.get_int("resampler_n_heads", 16);
  pc.head_dim = p.get_int("resampler_head_dim", 96);
  pc.n_latents = p.get_int("resampler_n_latents", 64);
  pc.qk_layer_norms = p.get_bool("qk_layer_norms_perceiver", false);
  pc.intermediate_size = 4 * vc.hidden_size;
  pc.init_std = init_std;
  if (f.use_resampler) {
    if (pc.depth < 0) p.fail("resampler_depth", "must not be negative");
    if (pc.n_heads <= 0) p.fail("resampler_n_heads", "must be positive");
    if (pc.head_dim <= 0) p.fail("resampler_head_dim", "must be positive");
    if (pc.n_latents <= 0) p.fail("resampler_n_latents", "must be positive");
  }

}

FlamingoConfig parse_config(const io::HfConfig& c) {
  FlamingoConfig f;
  const double init_std = c.get_double("initializer_range", kDefaultInitStd);
  const int64_t D = c.get_int("hidden_size", 4096);
  const int64_t heads = c.get_int("num_attention_heads", 32);
  const int64_t inter = c.get_int("intermediate_size", 11008);
  const int64_t layers = c.get_int("num_hidden_layers", 32);
  const int64_t vocab = c.get_int("vocab_size", 32000);
  const double eps = c.get_double("rms_norm_eps", 1e-6);
  const Act act = config_act(c, "hidden_act", "silu");
  if (D <= 0) c.fail("hidden_size", "must be positive");
  if (heads <= 0 || D % heads != 0)
    c.fail("num_attention_heads", "must divide hidden_size (" + std::to_string(D) + ")");
  if (inter <= 0) c.fail("intermediate_size", "must be positive");
  if (layers < 0) c.fail("num_hidden_layers", "must not be negative");
  if (vocab <= 0) c.fail("vocab_size", "must be positive");
  f.head_dim = D / heads;
  // IdeficsAttention always uses hidden_size / heads; a different head_dim would only reach RoPE.
  if (c.has("head_dim") && c.get_int("head_dim", 0) != f.head_dim)
    c.fail("head_dim", "must equal hidden_size / num_attention_heads (" + std::to_string(f.head_dim) + ") for idefics");
  // IdeficsRotaryEmbedding: the default RoPE only (the other ROPE_INIT_FUNCTIONS types are not implemented).
  f.rope = read_rope(c, RopeRules("flamingo", 10000.0));

  f.additional_vocab = c.get_int("additional_vocab_size", 0);
  if (f.additional_vocab < 0) c.fail("additional_vocab_size", "must not be negative");

  DecoderLmConfig& lm = f.lm;
  lm.vocab_size = vocab;
  lm.num_layers = static_cast<int>(layers);
  lm.block.attn.hidden_size = D;
  lm.block.attn.num_heads = heads;
  lm.block.attn.init_std = init_std;
  lm.block.mlp = GatedMlpConfig{.hidden_size = D, .intermediate_size = inter, .act = act, .init_std = init_std};
  lm.block.norm = NormConfig{NormKind::kRmsNorm, eps, false};
  lm.final_norm = lm.block.norm;
  lm.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  lm.init_std = init_std;

  const int64_t interval = c.get_int("cross_layer_interval", 1);
  if (interval <= 0) c.fail("cross_layer_interval", "must be positive");
  // HF builds num_hidden_layers // interval gated layers but indexes idx // interval for every
  // idx % interval == 0: any remainder indexes past the list.
  if (layers % interval != 0)
    c.fail("cross_layer_interval", std::to_string(interval) + " does not divide num_hidden_layers (" +
                                       std::to_string(layers) + "); transformers fails on this config");
  f.interval = static_cast<int>(interval);
  f.num_cross_layers = static_cast<int>(layers / interval);

  read_vision_side(c, init_std, f);
  const ClipVisionConfig& vc = f.vision;

  GatedXattnConfig& x = f.xattn;
  x.hidden_size = D;
  x.num_heads = heads;
  x.intermediate_size = inter;
  x.kv_input_size = vc.hidden_size;
  x.act = act;
  x.rms_norm_eps = eps;
  x.qk_layer_norms = c.get_bool("qk_layer_norms", false);
  x.init_std = init_std;
  const std::string alpha_type = c.get_string("alpha_type", "float");
  if (alpha_type == "float") {
    x.alpha_type = AlphaType::kFloat;
  } else if (alpha_type == "vector") {
    x.alpha_type = AlphaType::kVector;
  } else {
    c.fail("alpha_type", "unknown value \"" + alpha_type + "\" (supported: float, vector)");
  }
  const std::string alpha_init = c.get_string("alpha_initializer", "zeros");
  if (alpha_init == "zeros") {
    x.alpha_init = AlphaInit::kZeros;
  } else if (alpha_init == "ones") {
    x.alpha_init = AlphaInit::kOnes;
  } else if (alpha_init == "normal" || alpha_init == "gaussian" || alpha_init == "random") {
    x.alpha_init = AlphaInit::kNormal;
  } else {
    c.fail("alpha_initializer", "unknown scheme \"" + alpha_init + "\" (supported: zeros, ones, normal, gaussian, random)");
  }
  x.alphas_init_range = c.get_double("alphas_initializer_range", 0.0);
  return f;
}

// ---- per-call helpers ----

// Cross-attention mask for Tq tokens from their image rows img [B, Tq, N] (0/1): allowed keys are
// the L states of every image the row allows; gate is 1 where any image is allowed.
CrossMask cross_mask(const std::vector<int64_t>& img, int64_t B, int64_t Tq, int64_t N, int64_t L) {
  CrossMask m;
  m.mask.allowed.assign(static_cast<std::size_t>(B * Tq * N * L), 0);
  m.mask.allowed_batch = B;
  std::vector<float> gate(static_cast<std::size_t>(B * Tq), 0.0f);
  for (int64_t bt = 0; bt < B * Tq; ++bt) {
    for (int64_t k = 0; k < N; ++k) {
      if (img[static_cast<std::size_t>(bt * N + k)] == 0) continue;
      gate[static_cast<std::size_t>(bt)] = 1.0f;
      auto row = m.mask.allowed.begin() + (bt * N + k) * L;
      std::fill(row, row + L, uint8_t{1});
    }
  }
  m.gate = Tensor::from({B, Tq, 1}, gate);
  return m;
}

// The shared decode state plus the cross-attention keys and the image mask every new token keeps.
struct FlamingoDecodeState : LmDecodeState {
  using LmDecodeState::LmDecodeState;
  std::vector<CrossKv> kv;              // per gated layer
  std::vector<int64_t> last_image_row;  // [B, N]: the prompt's last image_attention_mask row
  int64_t n_img = 0, image_len = 0;
};

// ---- the model ----

class Flamingo final : public Architecture {
 public:
  Flamingo(const io::HfConfig& config, Rng& rng)
      : config_(config), cfg_(parse_config(config)), language_model(cfg_.lm, rng), vision_(cfg_.vision, rng) {
    if (cfg_.additional_vocab > 0) {
      additional_embedding_.emplace(cfg_.additional_vocab, language_model.hidden_size(), rng, cfg_.lm.init_std);
      if (!cfg_.lm.tie_word_embeddings)
        additional_fc_.emplace(language_model.hidden_size(), cfg_.additional_vocab, false, rng, cfg_.lm.init_std);
    }
    if (cfg_.use_resampler) resampler_.emplace(cfg_.perceiver, rng);
    for (int j = 0; j < cfg_.num_cross_layers; ++j)
      xattn_.push_back(std::make_unique<GatedXattnLayer>(cfg_.xattn, rng));
  }

  std::string_view family() const override { return "flamingo"; }
  const io::HfConfig& config() const override { return config_; }

  ForwardOutput forward(const Inputs& in, int64_t logits_to_keep = 0) override {
    ForwardOutput out;
    Prompt p = prepare(in, &out.stages);
    Tensor h = run_lm(p, nullptr, &out.stages, logits_to_keep);
    out.logits = logits(h);
    return out;
  }

  std::pair<Tensor, std::unique_ptr<DecodeState>> prefill(const Inputs& in) override {
    Prompt p = prepare(in, nullptr);
    auto state = std::make_unique<FlamingoDecodeState>(language_model.make_cache(p.B), p.B, p.T, p.layout.key_valid,
                                                 p.layout.next_position);
    Tensor h = run_lm(p, &state->cache, nullptr);
    state->kv = p.kv;
    state->n_img = p.N;
    state->image_len = p.L;
    for (int64_t b = 0; b < p.B; ++b) {
      const auto row = p.image_mask.begin() + ((b * p.T) + p.T - 1) * p.N;
      state->last_image_row.insert(state->last_image_row.end(), row, row + p.N);
    }
    return {logits(h), std::move(state)};
  }

  Tensor decode(DecodeState& base, const std::vector<int64_t>& tokens) override {
    FlamingoDecodeState& s = decode_state<FlamingoDecodeState>(base, tokens, "flamingo");
    Prompt p;
    p.B = s.batch;
    p.T = 1;
    p.N = s.n_img;
    p.L = s.image_len;
    p.embeds = embed(tokens, {p.B, 1});
    p.rope = rope_tables_1d<float>(s.next_position, p.B, 1, cfg_.head_dim, cfg_.rope.theta);
    p.self = s.step_mask();
    // HF generate keeps the last image_attention_mask row for every new token.
    p.image_mask = s.last_image_row;
    p.cross = cross_mask(p.image_mask, p.B, 1, p.N, p.L);
    p.kv = s.kv;
    Tensor l = logits(run_lm(p, &s.cache, nullptr));
    s.advance();
    return l;
  }

  // HF _update_model_kwargs_for_generation (no cache): image_attention_mask gains a copy of its last row.
  Inputs append_tokens(const Inputs& in, const std::vector<int64_t>& tokens) const override {
    Inputs out = Architecture::append_tokens(in, tokens);
    if (!in.has("image_attention_mask")) return out;
    const Shape s = in.shape("image_attention_mask");
    VLM_CHECK(s.size() == 3 && s[1] > 0, "flamingo: image_attention_mask must be [B, T, N_img], got " << shape_str(s));
    const std::vector<int64_t> v = in.ints("image_attention_mask");
    std::vector<int64_t> w;
    const auto row = static_cast<std::ptrdiff_t>(s[1] * s[2]);
    for (int64_t b = 0; b < s[0]; ++b) {
      auto first = v.begin() + static_cast<std::ptrdiff_t>(b) * row;
      w.insert(w.end(), first, first + row);
      w.insert(w.end(), first + row - static_cast<std::ptrdiff_t>(s[2]), first + row);
    }
    out.set_ints("image_attention_mask", {s[0], s[1] + 1, s[2]}, w);
    return out;
  }

  // IdeficsModel checkpoints (base_model_prefix "model") store the same names without "model.".
  std::vector<std::pair<std::string, std::string>> name_aliases() const override { return {{"model.", ""}}; }
  // The resampler and the gated cross-attention layers are what joins vision to the LM.
  std::vector<std::pair<std::string, std::string>> shared_modules() const override {
    return {{"model.vision_model.", "clip_vision."},
            {"model.embed_tokens.", "llama.embed_tokens."},
            {"model.layers.", "llama.layers."},
            {"model.norm.", "llama.norm."},
            {"lm_head.", "llama_head."}};
  }
  std::vector<std::pair<std::string, std::string>> component_prefixes() const override {
    return {{"model.vision_model.", "vision"},
            {"model.perceiver_resampler.", "connector"},
            {"model.gated_cross_attn_layers.", "connector"}};
  }

  void visit(const std::string& prefix, const ParamVisitor<float>& v) override {
    // HF registration order: embed_tokens (+ additional), vision_model, perceiver_resampler,
    // layers, gated_cross_attn_layers, norm; then lm_head (+ additional_fc).
    const std::string m = prefix + "model.";
    language_model.embed_tokens.visit(m + "embed_tokens.", v);
    if (additional_embedding_) additional_embedding_->visit(m + "embed_tokens.additional_embedding.", v);
    vision_.visit(m + "vision_model.", v);
    if (resampler_) resampler_->visit(m + "perceiver_resampler.", v);
    for (std::size_t i = 0; i < language_model.layers.size(); ++i)
      language_model.layers[i]->visit(m + "layers." + std::to_string(i) + ".", v);
    for (std::size_t j = 0; j < xattn_.size(); ++j)
      xattn_[j]->visit(m + "gated_cross_attn_layers." + std::to_string(j) + ".", v);
    language_model.norm.visit(m + "norm.", v);
    if (language_model.lm_head) language_model.lm_head->visit(prefix + "lm_head.", v);
    if (additional_fc_) additional_fc_->visit(prefix + "lm_head.additional_fc.", v);
  }

 private:
  // Everything one LM pass needs.
  struct Prompt {
    int64_t B = 0, T = 0, N = 0, L = 0;
    Tensor embeds;                             // [B, T, D]
    RopeTables<float> rope;
    AttnMask self;
    PromptLayout layout;                          // key padding and positions (prompts only)
    std::vector<int64_t> image_mask;              // [B, T, N]
    CrossMask cross;
    std::vector<CrossKv> kv;                      // per gated layer
  };

  // Image states [B*N, L, Dv] from pixel_values, image_encoder_embeddings or perceiver_embeddings.
  Tensor image_states(const Inputs& in, int64_t B, int64_t& N) const {
    const int given = int{in.has("pixel_values")} + int{in.has("image_encoder_embeddings")} +
                      int{in.has("perceiver_embeddings")};
    VLM_CHECK(given == 1, "flamingo: exactly one of pixel_values, image_encoder_embeddings or perceiver_embeddings "
                          "must be given, got " << given);
    Tensor states;
    if (in.has("perceiver_embeddings")) {
      VLM_CHECK(cfg_.use_resampler, "flamingo: perceiver_embeddings are given but use_resampler is false");
      const Tensor pe = in.floats("perceiver_embeddings");
      VLM_CHECK(pe.ndim() == 4 && pe.dim(0) == B && pe.dim(3) == cfg_.vision.hidden_size,
                "flamingo: perceiver_embeddings must be [" << B << ", N_img, L, " << cfg_.vision.hidden_size
                                                           << "], got " << shape_str(pe.shape()));
      N = pe.dim(1);
      return reshape(pe, {B * N, pe.dim(2), pe.dim(3)});
    }
    if (in.has("pixel_values")) {
      const Tensor px = in.floats("pixel_values");
      VLM_CHECK(px.ndim() == 5 && px.dim(0) == B,
                "flamingo: pixel_values must be [B=" << B << ", N_img, C, H, W], got " << shape_str(px.shape()));
      N = px.dim(1);
      if (N == 0) return Tensor();
      const PhaseScope phase("vision");
      states = vision_.forward(reshape(px, {B * N, px.dim(2), px.dim(3), px.dim(4)})).back();
    } else {
      const Tensor ie = in.floats("image_encoder_embeddings");
      VLM_CHECK(ie.ndim() == 4 && ie.dim(0) == B && ie.dim(3) == cfg_.vision.hidden_size,
                "flamingo: image_encoder_embeddings must be [" << B << ", N_img, S, " << cfg_.vision.hidden_size
                                                               << "], got " << shape_str(ie.shape()));
      N = ie.dim(1);
      if (N == 0) return Tensor();
      states = reshape(ie, {B * N, ie.dim(2), ie.dim(3)});
    }
    // The resampler; the gated cross-attention layers run inside the LM and count as LM time.
    const PhaseScope phase("connector");
    return resampler_ ? resampler_->forward(states) : states;
  }

  Prompt prepare(const Inputs& in, std::map<std::string, Tensor>* stages) const {
    Prompt p;
    // HF IdeficsModel's positions: cumsum(attention_mask) - 1, 1 on padding (arange without a mask).
    p.layout = prompt_layout(in, "flamingo");
    p.B = p.layout.batch;
    p.T = p.layout.length;
    p.embeds = embed(p.layout.ids, {p.B, p.T});
    p.rope = rope_tables_1d<float>(p.layout.positions, p.B, p.T, cfg_.head_dim, cfg_.rope.theta);
    p.self = causal_mask(p.layout.key_valid);

    const Tensor states = image_states(in, p.B, p.N);  // [B*N, L, Dv]
    p.L = states.defined() ? states.dim(1) : 0;
    if (stages != nullptr && states.defined()) (*stages)["image_features"] = states;
    const Shape ms = in.shape("image_attention_mask");
    VLM_CHECK(ms.size() == 3 && ms[0] == p.B && ms[1] == p.T && ms[2] == p.N,
              "flamingo: image_attention_mask must be [B, T, N_img] = [" << p.B << ", " << p.T << ", " << p.N
                                                                         << "], got " << shape_str(ms));
    p.image_mask = in.ints("image_attention_mask");
    p.cross = cross_mask(p.image_mask, p.B, p.T, p.N, p.L);
    if (states.defined()) {
      const Tensor context = reshape(states, {p.B, p.N * p.L, states.dim(2)});
      for (const auto& layer : xattn_) p.kv.push_back(layer->project(context));
    } else {
      p.kv.resize(xattn_.size());  // no image: every token is gated to zero
    }
    return p;
  }

  Tensor run_lm(const Prompt& p, KvCache<float>* cache, std::map<std::string, Tensor>* stages,
               int64_t keep_last = 0) const {
    const DecoderLm::LayerHook hook = [&](int i, const Tensor& h) -> Tensor {
      if (i % cfg_.interval != 0) return h;
      const auto j = static_cast<std::size_t>(i / cfg_.interval);
      const Tensor out = xattn_[j]->forward(h, p.kv[j], p.cross);
      if (stages != nullptr) (*stages)["gated_xattn_out_" + std::to_string(j)] = out;
      return out;
    };
    return language_model.forward(p.embeds, &p.rope, p.self, cache, hook, keep_last);
  }

  // IdeficsDecoupledEmbedding: ids >= vocab_size read additional_embedding.
  Tensor embed(const std::vector<int64_t>& ids, const Shape& shape) const {
    if (!additional_embedding_) return language_model.embed(ids, shape);
    const int64_t V = cfg_.lm.vocab_size, A = cfg_.additional_vocab;
    std::vector<int64_t> base(ids.size()), extra;
    std::vector<uint8_t> is_extra(ids.size(), 0);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      VLM_CHECK(ids[i] >= 0 && ids[i] < V + A, "flamingo: token id " << ids[i] << " out of range [0, " << V + A << ")");
      if (ids[i] >= V) {
        is_extra[i] = 1;
        extra.push_back(ids[i] - V);
      } else {
        base[i] = ids[i];
      }
    }
    Tensor rows = gather_rows(language_model.embed_tokens.weight, base);
    if (!extra.empty()) rows = scatter_rows(rows, is_extra, gather_rows(additional_embedding_->weight, extra));
    Shape out = shape;
    out.push_back(language_model.hidden_size());
    return reshape(rows, out);
  }

  // IdeficsDecoupledLinear: cat(lm_head(h), additional_fc(h)).
  Tensor logits(const Tensor& hidden) const {
    Tensor l = language_model.logits(hidden);
    if (additional_fc_) return concat<float>({l, additional_fc_->forward(hidden)}, 2);
    if (additional_embedding_) return concat<float>({l, matmul(hidden, additional_embedding_->weight, false, true)}, 2);
    return l;
  }

  io::HfConfig config_;
  FlamingoConfig cfg_;
  DecoderLm language_model;
  ClipVision vision_;
  std::optional<PerceiverResampler> resampler_;
  std::vector<std::unique_ptr<GatedXattnLayer>> xattn_;
  std::optional<Embedding<float>> additional_embedding_;
  std::optional<Linear<float>> additional_fc_;
};

}  // namespace

ImageInput image_input(const io::HfConfig& config) {
  FlamingoConfig f;
  read_vision_side(config, config.get_double("initializer_range", kDefaultInitStd), f);
  const ClipVisionConfig& v = f.vision;
  const int64_t grid = v.image_size / v.patch_size;
  return {v.image_size, v.patch_size, v.num_channels, f.use_resampler ? f.perceiver.n_latents : grid * grid + 1};
}

std::vector<ModelPart> parts(const io::HfConfig& config) {
  const FlamingoConfig f = parse_config(config);
  // One gated cross-attention layer (attention and MLP) per cross_layer_interval LM layers.
  const int interval = f.interval;
  const ModelPart cross{"gated cross-attention layers",
                        {{config.key_path("hidden_size"), config.has("hidden_size"),
                          static_cast<double>(f.xattn.hidden_size)},
                         {config.key_path("num_hidden_layers"), config.has("num_hidden_layers"),
                          static_cast<double>(f.lm.num_layers)},
                         {config.key_path("intermediate_size"), config.has("intermediate_size"),
                          static_cast<double>(f.xattn.intermediate_size)}},
                        [interval](const std::vector<double>& x) {
                          return std::floor(x[1] / interval) * (4 * x[0] * x[0] + 3 * x[0] * x[2]);
                        }};
  return {lm_part(f.lm, config), clip_part(f.vision, config.sub("vision_config")), cross};
}

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng) {
  check_param_budget(config, parts(config));
  return std::make_unique<Flamingo>(config, rng);
}

}  // namespace vlm::flamingo
