// Qwen2-VL (HF Qwen2VLForConditionalGeneration, transformers 5.17): the vision tower (vision.cpp)
// turns images and videos into text-width tokens that replace the image/video placeholders; the
// Qwen2 decoder runs with M-RoPE over the 3-D positions of get_rope_index (rope_index.cpp).
// Spec: docs/architectures.md §3 and tests/parity/README.md.
#include "architectures/qwen2vl/qwen2vl.h"

#include <algorithm>

#include "architectures/budget.h"
#include "architectures/lm_side.h"
#include "architectures/qwen2vl/rope_index.h"
#include "architectures/qwen2vl/vision.h"
#include "lib/nn/decoder_lm.h"
#include "lib/ops/ops.h"

namespace vlm::qwen2vl {

namespace {

struct Qwen2VlConfig {
  DecoderLmConfig lm;
  std::vector<int64_t> mrope_section;
  double rope_theta = 1e6;
  VisionConfig vision;
  int64_t image_token_id = 151655;
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
};

int64_t positive(const io::HfConfig& c, const std::string& key, int64_t fallback) {
  const int64_t v = c.get_int(key, fallback);
  if (v <= 0) c.fail(key, "must be positive, got " + std::to_string(v));
  return v;
}

// The vision tower and the placeholder ids: what the model builds and what its processor patches,
// merges and lays out images by (image_input()).
void read_vision_side(const io::HfConfig& cfg, Qwen2VlConfig& out) {
  const io::HfConfig vc = cfg.sub("vision_config");
  VisionConfig& v = out.vision;
  v.embed_dim = positive(vc, "embed_dim", 1280);
  v.depth = static_cast<int>(vc.get_int("depth", 32));
  if (v.depth < 0) vc.fail("depth", "must be non-negative");
  v.num_heads = positive(vc, "num_heads", 16);
  if (v.embed_dim % v.num_heads != 0 || (v.embed_dim / v.num_heads) % 4 != 0)
    vc.fail("num_heads", "embed_dim / num_heads must be a multiple of 4 (2-D rotary), got " +
                             std::to_string(v.embed_dim) + " / " + std::to_string(v.num_heads));
  const double ratio = vc.get_double("mlp_ratio", 4.0);
  if (!(ratio > 0.0 && static_cast<double>(v.embed_dim) * ratio < 2147483648.0))  // before the narrowing below
    vc.fail("mlp_ratio", "must be positive, with embed_dim * mlp_ratio below 2^31");
  v.mlp_hidden = static_cast<int64_t>(static_cast<double>(v.embed_dim) * ratio);  // int(embed_dim * mlp_ratio)
  if (v.mlp_hidden <= 0) vc.fail("mlp_ratio", "gives an empty MLP");
  v.act = config_act(vc, "hidden_act", "quick_gelu");
  v.patch_size = positive(vc, "patch_size", 14);
  v.temporal_patch_size = positive(vc, "temporal_patch_size", 2);
  v.spatial_merge_size = positive(vc, "spatial_merge_size", 2);
  v.in_channels = vc.has("in_channels") ? positive(vc, "in_channels", 3) : positive(vc, "in_chans", 3);
  v.out_hidden = positive(vc, "hidden_size", 3584);
  v.rope_theta = vc.sub("rope_parameters").get_double("rope_theta", 10000.0);
  v.init_std = vc.get_double("initializer_range", kDefaultInitStd);

  out.image_token_id = cfg.get_int("image_token_id", 151655);
  out.video_token_id = cfg.get_int("video_token_id", 151656);
  out.vision_start_token_id = cfg.get_int("vision_start_token_id", 151652);
}

Qwen2VlConfig parse_config(const io::HfConfig& cfg) {
  Qwen2VlConfig out;
  // v5 keeps the LM in text_config; older configs are flat.
  const io::HfConfig text = cfg.has("text_config") ? cfg.sub("text_config") : cfg;

  const int64_t hidden = positive(text, "hidden_size", 8192);
  const int64_t heads = positive(text, "num_attention_heads", 64);
  const int64_t kv_heads = positive(text, "num_key_value_heads", heads);
  if (hidden % heads != 0)
    text.fail("hidden_size", std::to_string(hidden) + " is not divisible by num_attention_heads " +
                                 std::to_string(heads));
  if (heads % kv_heads != 0)
    text.fail("num_key_value_heads", std::to_string(kv_heads) + " does not divide num_attention_heads " +
                                         std::to_string(heads));
  const int64_t head_dim = hidden / heads;  // Qwen2VLAttention ignores any head_dim key

  if (text.get_bool("use_sliding_window", false))
    text.fail("use_sliding_window", "sliding-window attention is not supported");
  if (text.has("layer_types")) {
    for (const auto& t : text.json().at("layer_types"))
      if (!t.is_string() || t.get<std::string>() != "full_attention")
        text.fail("layer_types", "only \"full_attention\" layers are supported, got " + io::short_dump(t));
  }

  // Rotary by the shared reader; "mrope" names the default RoPE, with its sections in the rope dict.
  RopeRules rules("qwen2vl", 1e6);
  rules.mrope = true;
  rules.default_mrope_section = {16, 24, 24};
  const RopeSettings rope = read_rope(text, rules);
  out.rope_theta = rope.theta;
  out.mrope_section = rope.mrope_section;
  const io::HfConfig rp = rope_dict(text);
  {
    int64_t sum = 0;
    bool ok = out.mrope_section.size() == 3;
    std::string got;
    for (int64_t s : out.mrope_section) {
      ok = ok && s >= 0;
      sum += s;
      got += (got.empty() ? "" : ", ") + std::to_string(s);
    }
    if (!ok || sum * 2 != head_dim)
      rp.fail("mrope_section", "must be 3 non-negative entries summing to head_dim/2 = " +
                                   std::to_string(head_dim / 2) + " (head_dim = hidden_size/num_attention_heads = " +
                                   std::to_string(head_dim) + "), got [" + got + "]" +
                                   (rp.has("mrope_section") ? "" : " (the default)"));
  }

  DecoderLmConfig& lm = out.lm;
  lm.vocab_size = positive(text, "vocab_size", 152064);
  lm.num_layers = static_cast<int>(positive(text, "num_hidden_layers", 80));
  AttentionConfig& a = lm.block.attn;
  a.hidden_size = hidden;
  a.num_heads = heads;
  a.num_kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.q_bias = a.k_bias = a.v_bias = true;
  a.o_bias = false;
  lm.init_std = a.init_std = text.get_double("initializer_range", kDefaultInitStd);  // the LM and lm_head
  GatedMlpConfig mlp;
  mlp.hidden_size = hidden;
  mlp.intermediate_size = positive(text, "intermediate_size", 29568);
  mlp.act = config_act(text, "hidden_act", "silu");
  mlp.bias = false;
  mlp.init_std = lm.init_std;
  lm.block.mlp = mlp;
  const double eps = text.get_double("rms_norm_eps", 1e-5);
  lm.block.norm = NormConfig{NormKind::kRmsNorm, eps, false};
  lm.final_norm = lm.block.norm;
  // v5 reads the top-level flag; a pre-v5 save with it only in text_config still ties.
  lm.tie_word_embeddings = cfg.get_bool("tie_word_embeddings", false) ||
                           (cfg.has("text_config") && text.get_bool("tie_word_embeddings", false));

  read_vision_side(cfg, out);
  const io::HfConfig vc = cfg.sub("vision_config");
  if (out.vision.out_hidden != hidden)
    vc.fail("hidden_size", "the merger output (" + std::to_string(out.vision.out_hidden) +
                               ") must equal the text width " + std::to_string(hidden));
  return out;
}

std::vector<Grid> grids_of(const Inputs& in, const std::string& name) {
  const Shape s = in.shape(name);
  VLM_CHECK(s.size() == 2 && s[1] == 3, "qwen2vl: " << name << " must be [N, 3], got " << shape_str(s));
  const std::vector<int64_t> v = in.ints(name);
  std::vector<Grid> out;
  for (int64_t i = 0; i < s[0]; ++i) {
    const auto k = static_cast<std::size_t>(3 * i);
    out.push_back(Grid{v[k], v[k + 1], v[k + 2]});
  }
  return out;
}

class Qwen2Vl : public Architecture {
  io::HfConfig config_;  // first: the members below are built from the parsed config
  Qwen2VlConfig cfg_;

 public:
  Qwen2Vl(const io::HfConfig& hf, const Qwen2VlConfig& cfg, Rng& rng)
      : config_(hf), cfg_(cfg), visual(cfg.vision, rng), language_model(cfg.lm, rng) {}

  std::string_view family() const override { return "qwen2vl"; }
  const io::HfConfig& config() const override { return config_; }

  void visit(const std::string& prefix, const ParamVisitor<float>& v) override {
    language_model.visit_parts(prefix + "model.", prefix + "lm_head.", v);
    visual.visit(prefix + "visual.", v);
  }

  // Its LM is Llama's with q/k/v biases: a Llama LM moves in only where those are given too.
  std::vector<std::pair<std::string, std::string>> shared_modules() const override {
    return {{"model.", "llama."}, {"lm_head.", "llama_head."}};
  }

  std::vector<std::pair<std::string, std::string>> component_prefixes() const override {
    return {{"visual.merger.", "connector"}, {"visual.", "vision"}};
  }

  std::vector<std::pair<std::string, std::string>> name_aliases() const override {
    return {
        {"model.", "model.language_model."},  // >= v4.52 Qwen2VLForConditionalGeneration
        {"visual.", "model.visual."},
        {"model.", "language_model."},  // a bare Qwen2VLModel (v4.52+) state dict
    };
  }

  ForwardOutput forward(const Inputs& in, int64_t logits_to_keep = 0) override {
    ForwardOutput out;
    Prepared p = prepare(in, &out.stages);
    out.logits = language_model.logits(language_model.forward(p.embeds, &p.rope, p.mask, nullptr, {}, logits_to_keep));
    out.position_ids = std::move(p.index.position_ids);
    out.position_shape = {3, p.B, p.T};
    return out;
  }

  std::pair<Tensor, std::unique_ptr<DecodeState>> prefill(const Inputs& in) override {
    Prepared p = prepare(in, nullptr);
    // HF continues every axis at cumsum(attention_mask) - 1 + rope_delta = max prompt position + 1.
    auto st = std::make_unique<LmDecodeState>(language_model.make_cache(p.B), p.B, p.T, p.mask.key_valid,
                                              std::move(p.index.next_position));
    const Tensor logits = language_model.logits(language_model.forward(p.embeds, &p.rope, p.mask, &st->cache));
    return {logits, std::move(st)};
  }

  Tensor decode(DecodeState& state, const std::vector<int64_t>& tokens) override {
    LmDecodeState& st = decode_state<LmDecodeState>(state, tokens, "qwen2vl");
    const int64_t B = st.batch;
    const Tensor h = language_model.embed(tokens, {B, 1});
    // The same next position on all three axes (max prompt position + 1 + step).
    std::vector<int64_t> pos;
    for (int a = 0; a < 3; ++a) pos.insert(pos.end(), st.next_position.begin(), st.next_position.end());
    const RopeTables<float> rope = mrope_tables<float>(pos, B, 1, head_dim(), cfg_.mrope_section, cfg_.rope_theta);
    const AttnMask mask = st.step_mask();
    const Tensor logits = language_model.logits(language_model.forward(h, &rope, mask, &st.cache));
    st.advance();
    return logits;
  }

  VisionTower visual;
  DecoderLm language_model;

 private:
  struct Prepared {
    int64_t B = 0, T = 0;
    Tensor embeds;  // [B, T, C]
    RopeIndex index;
    RopeTables<float> rope;
    AttnMask mask;
  };

  int64_t head_dim() const { return cfg_.lm.block.attn.head_dim; }

  // Embeddings with the vision tokens scattered in, 3-D positions, their M-RoPE tables, the mask.
  Prepared prepare(const Inputs& in, std::map<std::string, Tensor>* stages) const {
    Prepared p;
    const Shape s = in.shape("input_ids");
    PromptLayout layout = prompt_layout(in, "qwen2vl");
    p.B = layout.batch;
    p.T = layout.length;
    const std::vector<int64_t>& ids = layout.ids;
    std::vector<int64_t> attn;  // get_rope_index's attention_mask (empty: none given)
    if (in.has("attention_mask")) attn = in.ints("attention_mask");

    std::vector<int64_t> types;
    if (in.has("mm_token_type_ids")) {
      VLM_CHECK(in.shape("mm_token_type_ids") == s, "qwen2vl: mm_token_type_ids "
                                                        << shape_str(in.shape("mm_token_type_ids"))
                                                        << " does not match input_ids " << shape_str(s));
      types = in.ints("mm_token_type_ids");
    }

    // Embeddings, then image and video features in place of their placeholders (masked_scatter:
    // row-major over (batch, seq), features in order). HF picks the placeholders by id; with
    // mm_token_type_ids we pick the tokens typed image/video (the same ones for processor output),
    // so a placeholder id that generation appended as text (type 0) stays text, as in HF's cached
    // decoding, and generation without the cache recomputes the same thing.
    Tensor h = reshape(language_model.embed(ids, s), {p.B * p.T, language_model.hidden_size()});
    auto splice = [&](const char* pixels_name, const char* grid_name, int64_t token, int64_t type,
                      const char* hidden_stage, const char* feature_stage) {
      if (!in.has(pixels_name)) return std::vector<Grid>{};
      VLM_CHECK(in.has(grid_name), "qwen2vl: " << pixels_name << " given without " << grid_name);
      const std::vector<Grid> grids = grids_of(in, grid_name);
      // Each grid (t, h, w) must describe the patches pixel_values holds, checked before the tower
      // builds t*h*w positions from it ([1, 2^20, 2^20] would be 2^40).
      const Shape px = in.shape(pixels_name);
      int64_t patches = 0;
      for (const Grid& g : grids) {
        int64_t n = 0;
        if (g.t < 1 || g.h < 1 || g.w < 1 || __builtin_mul_overflow(g.t, g.h, &n) || __builtin_mul_overflow(n, g.w, &n) ||
            __builtin_add_overflow(patches, n, &patches))
          throw ConfigError(std::string("qwen2vl: ") + grid_name + " holds (" + std::to_string(g.t) + ", " +
                            std::to_string(g.h) + ", " + std::to_string(g.w) + "): each entry must be >= 1 and their products fit");
      }
      if (px.empty() || patches != px[0])
        throw ConfigError(std::string("qwen2vl: ") + grid_name + " describes " + std::to_string(patches) + " patches but " +
                          pixels_name + " has shape " + shape_str(px));
      const VisionTower::Output v = visual.forward(in.floats(pixels_name), grids);
      Placeholders at;
      if (types.empty()) {
        at = placeholders(ids, token);
      } else {
        at.rows.resize(ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) {
          const bool placeholder = types[i] == type;
          VLM_CHECK(!placeholder || ids[i] == token, "qwen2vl: token " << i << " has mm_token_type_id " << type
                                                                       << " but id " << ids[i] << ", not " << token);
          at.rows[i] = placeholder ? 1 : 0;
          at.count += at.rows[i];
        }
      }
      h = splice_placeholders(h, at, v.merged, "qwen2vl", type == 1 ? "image" : "video", token,
                              std::to_string(v.merged.dim(0)) + " features from " + grid_name);
      if (stages) {
        (*stages)[hidden_stage] = v.hidden;
        (*stages)[feature_stage] = v.merged;
      }
      return grids;
    };
    const std::vector<Grid> image_grids =
        splice("pixel_values", "image_grid_thw", cfg_.image_token_id, 1, "vision_hidden_states", "image_features");
    const std::vector<Grid> video_grids = splice("pixel_values_videos", "video_grid_thw", cfg_.video_token_id, 2,
                                                 "video_vision_hidden_states", "video_features");
    p.embeds = reshape(h, {p.B, p.T, language_model.hidden_size()});
    if (stages) (*stages)["inputs_embeds"] = p.embeds;

    // Positions: get_rope_index from mm_token_type_ids (5.17 refuses grids without them); plain
    // text without them gets arange(T) on all three axes, as the HF LM does.
    const bool multimodal = in.has("image_grid_thw") || in.has("video_grid_thw");
    if (!types.empty()) {
      p.index = get_rope_index(types, p.B, p.T, image_grids, video_grids, attn,
                               cfg_.vision.spatial_merge_size);
    } else {
      VLM_CHECK(!multimodal, "qwen2vl: image_grid_thw / video_grid_thw were given without mm_token_type_ids, "
                             "which M-RoPE needs (the processor returns it next to input_ids)");
      p.index.position_ids.resize(static_cast<std::size_t>(3 * p.B * p.T));
      for (std::size_t i = 0; i < p.index.position_ids.size(); ++i)
        p.index.position_ids[i] = static_cast<int64_t>(i) % p.T;
      p.index.next_position.assign(static_cast<std::size_t>(p.B), p.T);
      p.index.rope_deltas.assign(static_cast<std::size_t>(p.B), 0);
    }
    p.rope = mrope_tables<float>(p.index.position_ids, p.B, p.T, head_dim(), cfg_.mrope_section, cfg_.rope_theta);

    p.mask = causal_mask(layout.key_valid);
    return p;
  }
};

}  // namespace

ImageInput image_input(const io::HfConfig& config) {
  Qwen2VlConfig c;
  read_vision_side(config, c);
  const VisionConfig& v = c.vision;
  return {v.patch_size, v.temporal_patch_size, v.spatial_merge_size, v.in_channels, c.image_token_id,
          c.vision_start_token_id};
}

std::vector<ModelPart> parts(const io::HfConfig& config) {
  const Qwen2VlConfig c = parse_config(config);
  const io::HfConfig text = config.has("text_config") ? config.sub("text_config") : config;
  const io::HfConfig vc = config.sub("vision_config");
  const VisionConfig& v = c.vision;
  const double mlp_ratio = static_cast<double>(v.mlp_hidden) / static_cast<double>(v.embed_dim);
  const double in = static_cast<double>(v.in_channels * v.temporal_patch_size);
  const double merge2 = static_cast<double>(v.spatial_merge_size * v.spatial_merge_size);
  const double out = static_cast<double>(v.out_hidden);
  // Blocks (attention and MLP), the patch embedding and the merger (two layers of embed_dim x merge^2).
  ModelPart vision{"vision tower",
                         {{vc.key_path("embed_dim"), vc.has("embed_dim"), static_cast<double>(v.embed_dim)},
                          {vc.key_path("depth"), vc.has("depth"), static_cast<double>(v.depth)},
                          {vc.key_path("patch_size"), vc.has("patch_size"), static_cast<double>(v.patch_size)}},
                         [=](const std::vector<double>& x) {
                           const double E = x[0];
                           return x[1] * (4 * E * E + 2 * mlp_ratio * E * E) + in * x[2] * x[2] * E +
                                  E * merge2 * E * merge2 + E * merge2 * out;
                         }};
  vision.seq = ModelPart::Seq::kVision;  // merge^2 patches per visual token
  vision.width = static_cast<double>(v.embed_dim), vision.layers = v.depth;
  vision.heads = static_cast<double>(v.num_heads), vision.seq_scale = merge2;
  return {lm_part(c.lm, text), vision};
}

std::unique_ptr<Architecture> make(const io::HfConfig& config, Rng& rng) {
  check_param_budget(config, parts(config));
  return std::make_unique<Qwen2Vl>(config, parse_config(config), rng);
}

}  // namespace vlm::qwen2vl
