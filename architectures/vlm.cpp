#include "architectures/vlm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fnmatch.h>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "lib/core/random.h"
#include "lib/core/suggest.h"
#include "lib/io/durable.h"
#include "lib/measure/flops.h"
#include "lib/ops/gemm.h"
#include "lib/ops/ops.h"
#include "lib/train/optimizer.h"

namespace vlm {

namespace {

const FamilyEntry& family_named(const std::string& name) {
  for (const FamilyEntry& f : families())
    if (f.name == name) return f;
  std::ostringstream os;
  os << "unknown family \"" << name << "\"; known:";
  std::vector<std::string> names;
  for (const FamilyEntry& f : families()) {
    os << ' ' << f.name;
    names.emplace_back(f.name);
  }
  os << did_you_mean(name, names);
  throw ConfigError(os.str());
}

// The names of SpecialTokens' ids, in id order.
std::vector<std::string> special_words() {
  return {"<pad>", "<s>", "</s>", "<image>", "<newline>", "<vision_start>", "<vision_end>", "<image_around>"};
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

// Data-parallel training (TrainOptions::dp_sum), after this rank's backward: every gradient (weighted by
// the rank's share of the global batch), the loss and the step's FLOPs summed over the ranks, so each rank
// holds the global batch's mean gradients, the same bits everywhere. A parameter no rank has a gradient for
// keeps none, as in one process (AdamW skips it).
struct RankSums {
  double loss = 0;
  int64_t flops = 0;
};
RankSums sum_over_ranks(const std::vector<Tensor>& params, double loss, double share, int64_t flops,
                        const TrainOptions& opt) {
  std::size_t n = 0;
  for (const Tensor& p : params) n += static_cast<std::size_t>(p.numel());
  std::vector<double> buf;  // gradients, one has-a-gradient flag per parameter, loss, FLOPs
  buf.reserve(n + params.size() + 2);
  for (Tensor p : params) {
    if (!p.has_grad()) {
      buf.resize(buf.size() + static_cast<std::size_t>(p.numel()), 0.0);
      continue;
    }
    const float* g = p.grad_data();
    for (int64_t k = 0; k < p.numel(); ++k) buf.push_back(share * static_cast<double>(g[k]));
  }
  for (const Tensor& p : params) buf.push_back(p.has_grad() ? 1.0 : 0.0);
  buf.push_back(share * loss);
  buf.push_back(static_cast<double>(flops));
  opt.dp_sum(buf);
  std::size_t at = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    if (buf[n + i] > 0) {
      float* g = p.grad_data();
      for (int64_t k = 0; k < p.numel(); ++k) g[k] = static_cast<float>(buf[at + static_cast<std::size_t>(k)]);
    } else {
      p.zero_grad();
    }
    at += static_cast<std::size_t>(p.numel());
  }
  return RankSums{.loss = buf[n + params.size()], .flops = static_cast<int64_t>(buf[n + params.size() + 1])};
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

Vlm::Vlm(const std::string& model_dir, const data::Task& task) : vocab_(task_vocab(task)) {
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
  const nlohmann::json& words = meta["vocabulary"];
  const auto n = static_cast<int64_t>(words.size());
  // The task's words at the model's ids; a model trained on more tasks (stages) has more words after.
  for (int64_t i = 0; i < vocab_.size(); ++i) {
    const std::string theirs = i < n && words[static_cast<std::size_t>(i)].is_string()
                                   ? words[static_cast<std::size_t>(i)].get<std::string>()
                                   : std::string("(none)");
    const std::string ours = i < vocab_.size() ? vocab_.word(i) : std::string("(none)");
    if (theirs != ours)
      throw ConfigError(meta_path + ": the model's vocabulary differs from task " + task.name() + "'s at id " +
                        std::to_string(i) + ": \"" + theirs.substr(0, 64) + "\" vs \"" + ours.substr(0, 64) +
                        "\" (score it on the task it was trained on)");
  }
  if (n > vocab_.size()) {
    std::vector<std::string> rest;
    for (int64_t i = SpecialTokens::kCount; i < n; ++i) {
      VLM_CHECK(words[static_cast<std::size_t>(i)].is_string(), meta_path << ": vocabulary entry " << i << " is not a string");
      rest.push_back(words[static_cast<std::size_t>(i)].get<std::string>());
    }
    vocab_ = data::Vocab(special_words(), rest);
  }
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

// ---- training ----

StepColumns step_columns(const std::vector<StepLog>& log) {
  StepColumns c;
  for (const StepLog& l : log) {
    c.step.push_back(l.step);
    c.stage.push_back(l.stage);
    c.flops.push_back(l.flops);
    c.loss.push_back(l.loss);
    c.lr.push_back(l.lr);
    c.grad_norm.push_back(l.grad_norm);
    c.step_ms.push_back(l.step_ms);
  }
  return c;
}

void train(Vlm& vlm, const data::Task& task, const TrainOptions& opt, TrainState& state, const TrainHooks& hooks) {
  VLM_CHECK(opt.steps >= 0 && opt.batch_size > 0 && opt.first_step >= 0,
            "train: steps " << opt.steps << ", batch " << opt.batch_size << ", first step " << opt.first_step);
  const int end_step = opt.first_step + opt.steps;
  VLM_CHECK(state.steps_done >= opt.first_step && state.log.size() == static_cast<std::size_t>(state.steps_done),
            "train: cannot continue from step " << state.steps_done << " with " << state.log.size()
                                                << " logged steps in steps [" << opt.first_step << ", " << end_step
                                                << ")");
  // A stage that finished before the state was saved (a checkpoint of a later step) has nothing to do;
  // one saved at its last step leaves its optimizer behind (the next stage starts a fresh one).
  if (state.steps_done > end_step || (state.steps_done == end_step && opt.steps > 0)) {
    if (state.steps_done == end_step) state.optimizer.clear();
    return;
  }
  const auto t_enter = std::chrono::steady_clock::now();
  const double wall_before = state.wall_s;
  const auto wall_now = [&] {
    return wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_enter).count();
  };
  // The optimizer holds the parameters that train; a frozen one stops requiring a gradient for the
  // stage (so backward neither fills a buffer for it nor visits a branch only frozen ones feed) and
  // gets it back at the end, however train() ends.
  const NamedParams<float> all = named_parameters(vlm.model());
  std::vector<OptParam<float>> trained;
  std::vector<std::size_t> slot;  // named_parameters index of each optimizer parameter
  const std::set<std::string> frozen(opt.frozen.begin(), opt.frozen.end());
  std::vector<Tensor> frozen_tensors;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& [name, t] = all[i];
    if (frozen.count(name)) {
      frozen_tensors.push_back(t);
      continue;
    }
    const auto scale = opt.lr_scale.find(name);
    trained.push_back(OptParam<float>{.name = name,
                                      .param = t,
                                      .decay = decay_matrices_only<float>(name, t),
                                      .lr_scale = scale == opt.lr_scale.end() ? 1.0 : scale->second});
    slot.push_back(i);
  }
  VLM_CHECK(frozen_tensors.size() == frozen.size(), "train: " << frozen.size() << " frozen names, "
                                                              << frozen_tensors.size() << " of them parameters");
  VLM_CHECK(!trained.empty() || opt.steps == 0, "train: every parameter is frozen");
  struct Unfreeze {
    std::vector<Tensor>& ts;
    ~Unfreeze() {
      for (Tensor& t : ts) t.set_requires_grad(true);
    }
  } unfreeze{frozen_tensors};
  for (Tensor& t : frozen_tensors) {
    t.zero_grad();
    t.set_requires_grad(false);
  }
  AdamW<float> adam(std::move(trained),
                    AdamWConfig{.lr = opt.lr, .beta1 = opt.beta1, .beta2 = opt.beta2, .weight_decay = opt.weight_decay});
  if (!state.optimizer.empty()) {
    VLM_CHECK(state.optimizer.size() == all.size(),
              "train: optimizer state for " << state.optimizer.size() << " parameters, the model has " << all.size());
    for (std::size_t k = 0; k < slot.size(); ++k) adam.set_state(k, state.optimizer[slot[k]]);
    state.optimizer.clear();  // copied into the optimizer: not held twice
  }
  const LrSchedule sched{.kind = parse_lr_schedule(opt.schedule, "train.schedule"),
                         .lr = opt.lr,
                         .min_lr = opt.min_lr,
                         .warmup_steps = opt.warmup_steps >= 0 ? opt.warmup_steps : opt.steps / 20,
                         .total_steps = std::max(1, opt.steps)};
  std::vector<data::Sample> batch(static_cast<std::size_t>(opt.batch_size));
  const uint64_t base = opt.data_seed * 0x9E3779B97F4A7C15ULL;
  // Train indices are drawn by hashing a counter, not taken in order: consecutive indices share a scene
  // (sort_of_clevr asks 20 questions per image), so an in-order batch of 32 would hold two images.
  // Sample i of step s depends on (data_seed, s, i) alone, so a run continued from a checkpoint draws
  // what the uninterrupted run would have.
  int phase_steps = 0;
  for (const TrainOptions::Phase& p : opt.phases) {
    VLM_CHECK(p.steps >= 0 && p.task != nullptr, "train: a curriculum phase needs steps >= 0 and a task");
    phase_steps += p.steps;
  }
  VLM_CHECK(phase_steps <= opt.steps, "train: the curriculum's " << phase_steps << " steps exceed the " << opt.steps
                                                                 << " training steps");
  auto task_at = [&](int step) -> const data::Task& {
    step -= opt.first_step;
    for (const TrainOptions::Phase& p : opt.phases) {
      if (step < p.steps) return *p.task;
      step -= p.steps;
    }
    return task;
  };
  const auto validate_now = [&] {
    if (!hooks.validate) return;
    double flops = 0;
    for (const StepLog& l : state.log) flops += static_cast<double>(l.flops);
    CurvePoint p{.step = state.steps_done,
                 .stage = opt.stage,
                 .samples = opt.samples_before + static_cast<int64_t>(state.steps_done - opt.first_step) * opt.batch_size,
                 .train_flops = flops,
                 .scores = hooks.validate()};
    p.wall_s = wall_now();
    state.curve.push_back(std::move(p));
  };
  if (state.steps_done == opt.first_step && (state.curve.empty() || state.curve.back().stage != opt.stage))
    validate_now();
  for (int step = state.steps_done; step < end_step; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const FlopScope flops;
    // [train] precision = "bf16": this step's products in bf16 (not the validation after it).
    std::optional<GemmPrecisionScope> precision;
    if (opt.precision == "bf16") precision.emplace(GemmPrecision::kBf16);
    // Data-parallel: this rank draws and trains on its share [lo, hi) of the global batch, then the
    // gradients are summed over the ranks.
    const bool dp = opt.dp_sum && opt.dp_ranks > 1;
    const int lo = dp ? opt.batch_size * opt.dp_rank / opt.dp_ranks : 0;
    const int hi = dp ? opt.batch_size * (opt.dp_rank + 1) / opt.dp_ranks : opt.batch_size;
    const data::Task& step_task = task_at(step);
    for (int i = lo; i < hi; ++i)
      batch[static_cast<std::size_t>(i)] = step_task.sample(
          data::Split::kTrain,
          mix64(base + static_cast<uint64_t>(step - opt.first_step + opt.data_first_step) * static_cast<uint64_t>(opt.batch_size) +
                static_cast<uint64_t>(i)));
    Tensor loss = vlm.loss(vlm.train_batch(std::span<const data::Sample>(batch).subspan(
        static_cast<std::size_t>(lo), static_cast<std::size_t>(hi - lo))));
    double loss_v = loss.item();
    int64_t other_ranks_flops = 0;
    if (dp) {
      loss.backward();
      const int64_t mine = flops.flops();
      const RankSums sums = sum_over_ranks(adam.tensors(), loss_v, static_cast<double>(hi - lo) / opt.batch_size,
                                           mine, opt);
      loss_v = sums.loss;
      other_ranks_flops = sums.flops - mine;
    }
    if (!std::isfinite(loss_v)) {
      std::ostringstream os;
      os << "training diverged at step " << step << ": the loss is " << loss_v;
      throw Error(os.str());
    }
    if (!dp) loss.backward();
    const GradNormResult gn = opt.grad_clip > 0 ? clip_grad_norm(adam.tensors(), opt.grad_clip)
                                                : grad_norm(adam.tensors());
    if (!gn.finite) {
      std::ostringstream os;
      os << "training diverged at step " << step << ": the gradient norm is not finite";
      throw Error(os.str());
    }
    const double lr = sched.lr_at(step - opt.first_step);
    adam.step(lr);
    adam.zero_grad();
    precision.reset();
    StepLog s{.step = step,
              .stage = opt.stage,
              .loss = loss_v,
              .lr = lr,
              .grad_norm = gn.total_norm,
              .step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
              .flops = flops.flops() + other_ranks_flops};
    state.log.push_back(s);
    state.steps_done = step + 1;
    state.wall_s = wall_now();
    if (hooks.on_step) hooks.on_step(s);
    const bool last = state.steps_done == end_step;
    if (last || (hooks.eval_every > 0 && (state.steps_done - opt.first_step) % hooks.eval_every == 0)) validate_now();
    if ((!last || opt.checkpoint_last) && hooks.checkpoint && hooks.checkpoint_every > 0 &&
        state.steps_done % hooks.checkpoint_every == 0) {
      state.optimizer.assign(all.size(), AdamW<float>::ParamState{});
      for (std::size_t k = 0; k < slot.size(); ++k) state.optimizer[slot[k]] = adam.state(k);
      state.wall_s = wall_now();
      hooks.checkpoint(state);
      state.optimizer.clear();  // the optimizer's own tensors: not kept alive twice
    }
  }
  state.wall_s = wall_now();
}

// ---- evaluation ----

EvalResult evaluate(Vlm& vlm, const data::Task& task, data::Split split, int64_t n, int batch_size) {
  VLM_CHECK(n > 0 && batch_size > 0, "evaluate: n " << n << ", batch " << batch_size);
  EvalResult r;
  r.split = data::split_name(split);
  std::vector<data::Sample> batch;
  std::vector<data::ScoredItem> scored;
  for (int64_t start = 0; start < n; start += batch_size) {
    batch.clear();
    for (int64_t i = start; i < std::min<int64_t>(n, start + batch_size); ++i)
      batch.push_back(task.sample(split, static_cast<uint64_t>(i)));
    const auto answers = vlm.answer(batch, task.max_answer_tokens() + 1);
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const data::Sample& s = batch[k];
      EvalItem item{.index = start + static_cast<int64_t>(k),
                    .subtype = s.subtype,
                    .question = join(s.prompt),
                    .answer = join(s.answer),
                    .prediction = join(answers[k]),
                    .correct = answers[k] == s.answer};
      r.items.push_back(std::move(item));
      scored.push_back(data::ScoredItem{.subtype = s.subtype, .answer = s.answer, .prediction = answers[k]});
    }
  }
  // Per subtype: accuracy, chance, and the majority answer's share.
  int64_t all_majority = 0;
  SubtypeScore all{.subtype = "all"};
  double chance_sum = 0;
  for (const std::string& st : task.subtypes()) {
    SubtypeScore sc{.subtype = st, .chance = task.chance(st)};
    std::map<std::string, int64_t> freq;
    for (const EvalItem& it : r.items) {
      if (it.subtype != st) continue;
      ++sc.n;
      sc.correct += it.correct;
      ++freq[it.answer];
    }
    if (sc.n == 0) continue;  // never asked: no row (an n=0 row would read as 0% accuracy)
    int64_t top = 0;
    for (const auto& [a, c] : freq) top = std::max(top, c);
    sc.accuracy = static_cast<double>(sc.correct) / static_cast<double>(sc.n);
    sc.majority = static_cast<double>(top) / static_cast<double>(sc.n);
    all.n += sc.n;
    all.correct += sc.correct;
    all_majority += top;
    chance_sum += sc.chance * static_cast<double>(sc.n);
    r.scores.push_back(sc);
  }
  if (all.n > 0) {
    all.accuracy = static_cast<double>(all.correct) / static_cast<double>(all.n);
    all.majority = static_cast<double>(all_majority) / static_cast<double>(all.n);
    all.chance = chance_sum / static_cast<double>(all.n);
  }
  r.scores.push_back(all);
  const std::vector<std::string> metrics = task.metrics();
  r.metrics = data::metric_scores(metrics, task.subtypes(), scored);
  if (!metrics.empty()) r.headline = metrics.front();
  return r;
}

// ---- cost ----

InferenceCost inference_cost(Vlm& vlm, const data::Sample& sample) {
  NoGradGuard no_grad;
  InferenceCost c;
  for (const data::Image& im : sample.images) c.visual_tokens += vlm.processor().image_cost(im.height, im.width).visual_tokens;
  const std::vector<MultimodalSample> rows{vlm.prompt(sample)};
  const Inputs in = vlm.processor().make_inputs(rows);
  c.lm_tokens = in.shape("input_ids").at(1);
  const FlopScope prefill;
  auto [logits, state] = vlm.model().prefill(in);
  c.prefill_flops = prefill.flops();
  const FlopScope decode;
  vlm.model().decode(*state, {vlm.vocab().id(sample.answer.at(0))});
  c.decode_flops_per_token = decode.flops();
  return c;
}

}  // namespace vlm
