#include "training/vlm.h"

#include <algorithm>
#include <fnmatch.h>
#include <fstream>
#include <sstream>

#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "lib/core/random.h"
#include "lib/core/suggest.h"
#include "lib/io/durable.h"
#include "lib/ops/ops.h"

namespace vlm {

namespace {

// The names of SpecialTokens' ids, in id order.
std::vector<std::string> special_words() {
  return {"<pad>", "<s>", "</s>", "<image>", "<newline>", "<vision_start>", "<vision_end>", "<image_around>"};
}

}  // namespace

data::Vocab task_vocab(const data::Task& task, const std::vector<const data::Task*>& more) {
  static_assert(SpecialTokens::kCount == 8, "special_words() lists every SpecialTokens id");
  std::vector<const data::Task*> all{&task};
  all.insert(all.end(), more.begin(), more.end());
  return data::Vocab(special_words(), data::union_vocabulary(all));
}

data::Vocab family_vocab(const data::Task& task, const std::vector<const data::Task*>& more,
                         std::span<const std::string_view> own_tokens, SpecialTokens* tokens) {
  data::Vocab v = task_vocab(task, more);
  if (own_tokens.empty()) return v;
  std::vector<std::string> words;
  for (int64_t i = SpecialTokens::kCount; i < v.size(); ++i) words.push_back(v.word(i));
  for (const std::string_view t : own_tokens) {
    VLM_CHECK(std::find(words.begin(), words.end(), t) == words.end(),
              "family token \"" << t << "\" is also a task word");
    words.emplace_back(t);
  }
  v = data::Vocab(special_words(), words);
  for (const std::string_view t : own_tokens) tokens->own[std::string(t)] = v.id(std::string(t));
  return v;
}

void check_memory(const VlmSpec& spec, const data::Task& task, std::vector<Workload> uses) {
  const FamilyEntry& entry = family_named(spec.family);
  ModelSizes sizes = spec.sizes;
  sizes.vocab_size = task_vocab(task).size();
  const io::HfConfig cfg(entry.build_config(sizes, spec.family_keys), spec.family + " config");
  const std::vector<ModelPart> parts = entry.parts(cfg);
  check_param_budget(cfg, parts);  // before the processor reads sizes the weights cannot hold
  const nlohmann::json options = spec.processor_options.is_null() ? nlohmann::json::object() : spec.processor_options;
  const std::unique_ptr<Processor> processor = entry.make_processor(cfg, options, sizes.tokens);
  for (Workload& w : uses) {
    if (w.images <= 0 || w.image_height <= 0 || w.image_width <= 0) continue;
    const ImageCost c = processor->image_cost(static_cast<int64_t>(w.image_height), static_cast<int64_t>(w.image_width));
    w.visual_tokens = static_cast<double>(c.visual_tokens), w.lm_tokens = static_cast<double>(c.lm_tokens);
    w.seen_height = static_cast<double>(c.height), w.seen_width = static_cast<double>(c.width);
  }
  check_memory_budget(cfg, parts, uses);
}

Vlm::Vlm(const VlmSpec& spec, const data::Task& task, const std::vector<const data::Task*>& more)
    : family_(spec.family), vocab_(family_vocab(task, more, family_named(spec.family).own_tokens, &tokens_)) {
  const FamilyEntry& entry = family_named(spec.family);
  ModelSizes sizes = spec.sizes;
  sizes.vocab_size = vocab_.size();
  sizes.tokens = tokens_;
  hf_config_ = entry.build_config(sizes, spec.family_keys);
  const io::HfConfig cfg(hf_config_, spec.family + " config");
  Rng rng(spec.init_seed);
  model_ = entry.make(cfg, rng);
  reinitialise(spec);
  processor_options_ = spec.processor_options.is_null() ? nlohmann::json::object() : spec.processor_options;
  processor_ = entry.make_processor(cfg, processor_options_, tokens_);
}

namespace {

// DIR/vlmlab.json, checked to hold the vocabulary (a list of words).
nlohmann::json read_kept_meta(const std::string& model_dir) {
  const std::string meta_path = model_dir + "/vlmlab.json";
  std::ifstream in(meta_path);
  if (!in) throw ConfigError(meta_path + ": cannot read it (a model folder vlmlab kept holds config.json, "
                             "model.safetensors and vlmlab.json)");
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(meta_path + ": not valid JSON: " + e.what());
  }
  if (!meta.is_object() || !meta.contains("vocabulary") || !meta["vocabulary"].is_array())
    throw ConfigError(meta_path + ": \"vocabulary\" (a list of words) is missing");
  for (std::size_t i = 0; i < meta["vocabulary"].size(); ++i)
    if (!meta["vocabulary"][i].is_string())
      throw ConfigError(meta_path + ": vocabulary entry " + std::to_string(i) + " is not a string");
  return meta;
}

}  // namespace

std::vector<std::string> kept_vocabulary(const std::string& model_dir) {
  return read_kept_meta(model_dir)["vocabulary"].get<std::vector<std::string>>();
}

std::string vocabulary_difference(const std::vector<std::string>& theirs, const data::Vocab& ours, bool prefix) {
  const auto n_theirs = static_cast<int64_t>(theirs.size());
  const int64_t n = prefix ? ours.size() : std::max(ours.size(), n_theirs);
  for (int64_t i = 0; i < n; ++i) {
    const std::string a = i < n_theirs ? theirs[static_cast<std::size_t>(i)] : std::string("(none)");
    const std::string b = i < ours.size() ? ours.word(i) : std::string("(none)");
    if (a != b)
      return "id " + std::to_string(i) + ": \"" + a.substr(0, 64) + "\" there, \"" + b.substr(0, 64) + "\" here";
  }
  return "";
}

Vlm::Vlm(const std::string& model_dir, const data::Task& task) : vocab_(task_vocab(task)) {
  const nlohmann::json meta = read_kept_meta(model_dir);
  const auto words = meta["vocabulary"].get<std::vector<std::string>>();
  const auto n = static_cast<int64_t>(words.size());
  // The task's words at the model's ids; a model trained on more tasks (stages) has more words after.
  const std::string diff = vocabulary_difference(words, vocab_, true);
  if (!diff.empty())
    throw ConfigError(model_dir + "/vlmlab.json: the model's vocabulary differs from task " + task.name() + "'s at " +
                      diff + " (score it on the task it was trained on)");
  if (n > vocab_.size())
    vocab_ = data::Vocab(special_words(), std::vector<std::string>(words.begin() + SpecialTokens::kCount, words.end()));
  model_ = load_pretrained(model_dir);
  family_ = std::string(family_for_config(model_->config()).name);
  for (const std::string_view t : family_for_config(model_->config()).own_tokens)
    tokens_.own[std::string(t)] = vocab_.id(std::string(t));
  hf_config_ = model_->config().json();
  processor_options_ = meta.value("processor", nlohmann::json::object());
  processor_ = family_for_config(model_->config()).make_processor(model_->config(), processor_options_, tokens_);
}

void Vlm::save(const std::string& dir, const nlohmann::json& extra) {
  save_pretrained(*model_, dir);
  nlohmann::json meta = extra;
  meta["format"] = "vlmlab-model-1";
  meta["family"] = family_;
  meta["processor"] = processor_options_;
  std::vector<std::string> words;
  for (int64_t i = 0; i < vocab_.size(); ++i) words.push_back(vocab_.word(i));
  meta["vocabulary"] = words;
  io::write_file_atomically(dir + "/vlmlab.json", meta.dump(1) + "\n");
}

void Vlm::reinitialise(const VlmSpec& spec) {
  const std::vector<std::pair<std::string, double>>& rules = spec.init_std;
  if (rules.empty()) return;
  // Its own stream, so the family's init of every other parameter is unchanged.
  Rng rng(spec.init_seed ^ 0x5EED1417A11CE5EDULL);
  std::vector<int> hits(rules.size(), 0);
  for (auto& [name, t] : named_parameters(*model_)) {
    std::size_t rule = rules.size();
    for (std::size_t r = 0; r < rules.size(); ++r) {
      if (fnmatch(rules[r].first.c_str(), name.c_str(), 0) != 0) continue;
      ++hits[r];
      if (rule < rules.size())
        throw ConfigError("init_std: \"" + rules[rule].first + "\" and \"" + rules[r].first + "\" both match " +
                          name + "; make the globs disjoint");
      rule = r;
    }
    if (rule == rules.size()) continue;
    float* d = t.data();
    for (int64_t k = 0; k < t.numel(); ++k) d[k] = static_cast<float>(rules[rule].second * rng.normal());
  }
  for (std::size_t r = 0; r < rules.size(); ++r) {
    if (hits[r] > 0) continue;
    std::ostringstream os;
    os << "init_std: \"" << rules[r].first << "\" matches no parameter of " << spec.family << " (names look like";
    int shown = 0;
    for (const auto& [name, t] : named_parameters(*model_)) {
      if (shown++ == 3) break;
      os << ' ' << name;
    }
    os << " ...; `vlmlab check --params` lists them)";
    throw ConfigError(os.str());
  }
}

ParamCounts Vlm::param_counts() {
  ParamCounts c;
  for (const auto& [name, t] : named_parameters(*model_)) {
    const std::string comp = component_of(*model_, name);
    (comp == "vision" ? c.vision : comp == "connector" ? c.connector : c.lm) += t.numel();
  }
  return c;
}

MultimodalSample Vlm::prompt(const data::Sample& s) const {
  MultimodalSample m;
  int64_t n_markers = 0;
  for (const std::string& w : s.prompt) {
    if (w == data::kImageWord) {
      m.ids.push_back(kImageMarker);
      ++n_markers;
    } else {
      m.ids.push_back(vocab_.id(w));
    }
  }
  VLM_CHECK(n_markers == static_cast<int64_t>(s.images.size()),
            "sample: the prompt has " << n_markers << " image markers for " << s.images.size() << " images");
  m.images = s.images;
  return m;
}

std::vector<int64_t> Vlm::target(const data::Sample& s) const {
  std::vector<int64_t> t = vocab_.encode(s.answer);
  t.push_back(tokens_.eos);
  return t;
}

Vlm::TrainBatch Vlm::train_batch(std::span<const data::Sample> samples) const {
  TrainBatch b;
  std::vector<MultimodalSample> rows;
  rows.reserve(samples.size());
  for (const data::Sample& s : samples) {
    MultimodalSample m = prompt(s);
    std::vector<int64_t> t = target(s);
    for (const int64_t id : t) m.ids.push_back(id);
    rows.push_back(std::move(m));
    b.targets.push_back(std::move(t));
  }
  b.inputs = processor_->make_inputs(rows);
  return b;
}

Tensor Vlm::loss(const TrainBatch& batch, bool all_logits) {
  // Row b's last n_b tokens are its targets; the logits one position earlier predict them, so only
  // the last max(n_b) + 1 positions' logits are needed (rows are left-padded: every row ends in the
  // last column).
  std::size_t most = 0;
  for (const auto& t : batch.targets) most = std::max(most, t.size());
  const Tensor logits = model_->forward(batch.inputs, all_logits ? 0 : static_cast<int64_t>(most) + 1).logits;
  const int64_t B = logits.dim(0), T = logits.dim(1), V = logits.dim(2);
  VLM_CHECK(B == static_cast<int64_t>(batch.targets.size()), "loss: " << B << " rows for " << batch.targets.size()
                                                                       << " targets");
  std::vector<int64_t> rows, ids;
  std::vector<int64_t> offsets{0};
  for (int64_t b = 0; b < B; ++b) {
    const auto& t = batch.targets[static_cast<std::size_t>(b)];
    const auto n = static_cast<int64_t>(t.size());
    VLM_CHECK(n >= 1 && n < T, "loss: row " << b << " has " << n << " targets in " << T << " positions");
    for (int64_t k = 0; k < n; ++k) {
      rows.push_back(b * T + T - n - 1 + k);
      ids.push_back(t[static_cast<std::size_t>(k)]);
    }
    offsets.push_back(static_cast<int64_t>(rows.size()));
  }
  const Tensor picked = gather_rows(reshape(logits, {B * T, V}), rows);  // [N, V]
  Tensor total;
  for (int64_t b = 0; b < B; ++b) {
    const auto lo = offsets[static_cast<std::size_t>(b)], hi = offsets[static_cast<std::size_t>(b + 1)];
    const std::vector<int64_t> tb(ids.begin() + lo, ids.begin() + hi);
    const Tensor l = cross_entropy(slice(picked, 0, lo, hi), tb);
    total = b == 0 ? l : add(total, l);
  }
  return scale(total, 1.0 / static_cast<double>(B));
}

std::vector<std::vector<std::string>> Vlm::answer(std::span<const data::Sample> samples, int max_tokens) {
  std::vector<MultimodalSample> rows;
  rows.reserve(samples.size());
  for (const data::Sample& s : samples) rows.push_back(prompt(s));
  GenerateOptions opt;
  opt.max_new_tokens = max_tokens;
  opt.eos_token_ids = {tokens_.eos};
  opt.pad_token_id = tokens_.pad;
  const auto generated = greedy_generate(*model_, processor_->make_inputs(rows), opt);
  std::vector<std::vector<std::string>> out;
  for (const auto& g : generated) {
    std::vector<std::string> words;
    for (const int64_t id : g) {
      if (id == tokens_.eos) break;
      words.push_back(vocab_.word(id));
    }
    out.push_back(std::move(words));
  }
  return out;
}

}  // namespace vlm
