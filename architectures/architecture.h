// The one interface every family implements, and what is written once on top of it: loading and
// saving an HF-format folder, greedy generation with or without the KV cache.
// A family turns HF processor outputs (named tensors: input_ids, pixel_values, image_grid_thw, ...)
// into logits; the names and layouts are the HF processors' (see tests/parity/README.md).
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/core/tensor.h"
#include "lib/data/image.h"
#include "lib/io/hf_config.h"
#include "lib/io/safetensors.h"
#include "lib/nn/modules.h"

namespace vlm {

// Model inputs by HF processor name.
class Inputs {
 public:
  Inputs() = default;
  static Inputs from_safetensors(const io::Safetensors& st);  // every tensor of the file

  bool has(const std::string& name) const { return t_.count(name) > 0; }
  Shape shape(const std::string& name) const;
  std::vector<int64_t> ints(const std::string& name) const;  // any integer or BOOL tensor
  Tensor floats(const std::string& name) const;              // F32/F16/BF16/F64 as a float tensor
  void set_ints(const std::string& name, const Shape& shape, const std::vector<int64_t>& values);
  void set_floats(const std::string& name, const Tensor& t);
  void erase(const std::string& name) { t_.erase(name); }
  std::vector<std::string> names() const;
  const std::map<std::string, io::RawTensor>& tensors() const { return t_; }  // e.g. to write them out

 private:
  const io::RawTensor& at(const std::string& name) const;
  std::map<std::string, io::RawTensor> t_;
};

struct ForwardOutput {
  Tensor logits;  // [B, T, V]; [B, logits_to_keep, V] when forward() was asked for the last positions only
  // Stages a parity check can compare, under the fixture names (image_features, video_features,
  // vision_hidden_states, inputs_embeds, gated_xattn_out_<j>, ...). Fill what is natural.
  std::map<std::string, Tensor> stages;
  std::vector<int64_t> position_ids;  // families with computed positions (M-RoPE: [3, B, T] flat)
  Shape position_shape;
};

// Whatever a family keeps between decode steps (KV cache, positions, cross-attention state).
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

using ArchitectureFactory = std::unique_ptr<Architecture> (*)(const io::HfConfig& config, Rng& rng);
struct ModelPart;  // architectures/budget.h
// The parts a config describes, with their parameter counts (the memory budget), built from the
// parsed config alone: nothing is allocated.
using PartsFactory = std::vector<ModelPart> (*)(const io::HfConfig& config);

// ---- From task samples to model inputs (each family's HF processor) ----

// The token ids a vlmlab vocabulary reserves. A family's config (built from sizes) points its own
// special ids (image_token_id, vision_start_token_id, ...) at these.
struct SpecialTokens {
  int64_t pad = 0, bos = 1, eos = 2;
  int64_t image = 3;         // llava <image>, fuyu |SPEAKER|, qwen2vl <|image_pad|>, idefics <image>
  int64_t newline = 4;       // fuyu |NEWLINE|
  int64_t vision_start = 5;  // qwen2vl <|vision_start|>
  int64_t vision_end = 6;    // qwen2vl <|vision_end|>
  int64_t image_around = 7;  // idefics <fake_token_around_image>
  static constexpr int64_t kCount = 8;  // task words start here
  // A family's own special tokens (FamilyEntry::own_tokens) by name, with their ids: they come after
  // every task word, so adding one moves no other family's ids (nor its own task words').
  std::map<std::string, int64_t> own;
};

// Stands for "the next image" in MultimodalSample::ids.
inline constexpr int64_t kImageMarker = -1;

// One sample before its family's processor: text token ids (no BOS/EOS; the processor adds what
// its tokenizer adds) with kImageMarker where each image goes, and the raw RGB images in order.
struct MultimodalSample {
  std::vector<int64_t> ids;
  std::vector<data::Image> images;
};

// What one image costs: visual tokens (rows the image becomes before the LM: spliced tokens, or the
// cross-attention context for flamingo) and the LM sequence positions it takes.
struct ImageCost {
  int64_t visual_tokens = 0;
  int64_t lm_tokens = 0;
  int64_t height = 0, width = 0;  // the size the model sees after preprocessing
};

// A family's HF processor: image preprocessing from raw RGB and the prompt layout.
class Processor {
 public:
  virtual ~Processor() = default;
  // Model inputs for a batch (the names and layouts Architecture::forward reads), rows left-padded
  // with pad ids / attention_mask 0, so every row's last token is in the last column.
  virtual Inputs make_inputs(const std::vector<MultimodalSample>& batch) const = 0;
  virtual ImageCost image_cost(int64_t height, int64_t width) const = 0;
  // What this processor does to a height x width image that its user may not expect (a centre crop,
  // pixels no patch covers, a resize the image's own size did not ask for), one sentence each with
  // its numbers; `vlmlab check` prints them as warnings.
  virtual std::vector<std::string> warnings(int64_t /*height*/, int64_t /*width*/) const { return {}; }
};

// `model_config` is the config the model was built from (patch size, image size, merge size, special
// ids); `options` holds image-processor settings by their HF preprocessor_config.json names (e.g.
// qwen2vl min_pixels/max_pixels, fuyu size); an unknown option is a ConfigError naming it.
using ProcessorFactory = std::unique_ptr<Processor> (*)(const io::HfConfig& model_config,
                                                        const nlohmann::json& options, const SpecialTokens& tokens);

// ---- Models from shared sizes ----

// The sizes an experiment shares across families ([model.text], [model.vision]); 0 means "the
// family's default rule" (e.g. num_key_value_heads = num_attention_heads).
struct ModelSizes {
  struct Text {
    int64_t hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 0;
    int64_t intermediate_size = 0;  // 0: 4 x hidden_size
  } text;
  struct Vision {
    int64_t hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 4, intermediate_size = 0;
    int64_t patch_size = 15, image_size = 75, num_channels = 3;
  } vision;
  int64_t vocab_size = 0;  // special tokens + task words
  SpecialTokens tokens;
  // The std of every weight the family draws from N(0, initializer_range) (HF's key of that name, in
  // each config the family has: text, vision, top level), so one value, or one sweep, sets it for
  // every family alike. HF's default 0.02 suits widths of 768 and more.
  double initializer_range = 0.02;
};

// An HF config.json for the family at these sizes, with `family_keys` (HF key names, e.g.
// projector_hidden_act, resampler_n_latents, spatial_merge_size) placed where the family's config
// keeps them. An unknown key is a ConfigError naming it.
using ConfigBuilder = nlohmann::json (*)(const ModelSizes& sizes, const nlohmann::json& family_keys);

// For ConfigBuilders: writes each of `keys` over an entry `config` already has (so a builder lists
// every key its family reads): a top-level key, a dotted path ("vision_config.hidden_act"), or a key
// found in exactly one sub-config object. The JSON type must match (an integer may fill a float; a
// list of numbers may fill a number, as vision_feature_layer allows). Otherwise a ConfigError naming
// the key and the keys the family accepts.
nlohmann::json apply_family_keys(nlohmann::json config, const nlohmann::json& keys, std::string_view family);
// Text sizes with the family-independent defaults resolved (kv heads = heads, intermediate = 4 x hidden).
ModelSizes::Text resolved_text(const ModelSizes& sizes);
// Vision sizes with intermediate_size 0 resolved to 4 x hidden_size.
ModelSizes::Vision resolved_vision(const ModelSizes& sizes);

struct FamilyEntry {
  std::string_view name;           // vlmlab's family name
  std::string_view hf_model_type;  // config.json "model_type"
  std::string_view hf_class;       // transformers class, for messages
  ArchitectureFactory make;
  ProcessorFactory make_processor;
  ConfigBuilder build_config;
  PartsFactory parts;
  // Special tokens only this family uses (e.g. a query token), appended after the task's words
  // (SpecialTokens::own); the shared ids above stay the same for every family.
  std::span<const std::string_view> own_tokens = {};
};

std::span<const FamilyEntry> families();  // registry.cpp: the one table
const FamilyEntry& family_for_config(const io::HfConfig& config);

// Builds the family named by config.json's model_type, with freshly initialised weights.
std::unique_ptr<Architecture> make_architecture(const io::HfConfig& config, Rng& rng);
// DIR/config.json + DIR/model.safetensors (names as transformers writes them, or an alias layout).
std::unique_ptr<Architecture> load_pretrained(const std::string& dir);
void load_weights(Architecture& arch, const io::Safetensors& st);
// Writes DIR/config.json, DIR/model.safetensors and DIR/generation_config.json so transformers (and
// load_pretrained) open it.
void save_pretrained(Architecture& arch, const std::string& dir);
// The generation settings transformers derives from a model's config (GenerationConfig's
// from_model_config): bos_token_id, eos_token_id and pad_token_id from the top level, else from
// text_config (where qwen2vl keeps them). What save_pretrained writes as generation_config.json.
nlohmann::json generation_config(const io::HfConfig& config);

// HF generate's greedy semantics: EOS cannot be chosen before min_new_tokens (HF's
// MinNewTokensLengthLogitsProcessor); a row that emits EOS is finished and then gets pad_token_id.
struct GenerateOptions {
  int max_new_tokens = 1;
  int min_new_tokens = 0;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
  bool use_cache = true;
};

// Greedy continuation per row: [B][n], n = max_new_tokens, or fewer when every row has emitted EOS
// (HF generate stops there too).
std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, const GenerateOptions& opt);
// Argmax of the last position of each row of logits [B, T, V], skipping `banned` ids; the first
// maximum wins, as torch.argmax.
std::vector<int64_t> argmax_last(const Tensor& logits, const std::vector<int64_t>& banned = {});
// Plain greedy (no EOS handling): [B][n].
std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, int max_new_tokens,
                                                  bool use_cache);

}  // namespace vlm
