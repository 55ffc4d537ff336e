#include "experiments/config.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "architectures/registry.h"
#include "experiments/stages.h"
#include "lib/core/suggest.h"
#include "training/cost.h"

namespace vlm::exp {

namespace {

// Experiment and variant names become file and folder names (results/NAME.h5, results/NAME/, a run
// id's checkpoint folder), and a run id is a folder name: both stay well inside NAME_MAX (255).
constexpr std::size_t kMaxNameChars = 100;
constexpr std::size_t kMaxRunIdChars = 200;

// Text from the file quoted in a message, cut at 200 characters.
std::string shorten(const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; }

std::string location(const std::string& file, const toml::source_region& r) {
  std::ostringstream os;
  os << file;
  if (r.begin.line > 0) os << ':' << r.begin.line << ':' << r.begin.column;
  return os.str();
}

[[noreturn]] void fail(const std::string& file, const toml::source_region& r, const std::string& key_path,
                       const std::string& what) {
  std::ostringstream os;
  os << location(file, r) << ": " << shorten(key_path) << ": " << what;
  throw ConfigError(os.str());
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

std::string node_text(const toml::node& n) {
  if (n.is_floating_point()) {  // shortest text that reads back to the same double (0.003, not 0.0030000000000000001)
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, n.as_floating_point()->get());
    return std::string(buf, res.ptr);
  }
  std::ostringstream os;
  n.visit([&](const auto& v) {
    if constexpr (toml::is_string<decltype(v)>) os << v.get();
    else os << v;
  });
  return os.str();
}

// One TOML table read key by key: typed getters with ranges, and at the end every key nobody read
// is an "unknown key" error at its own position.
class Section {
 public:
  Section(const toml::table* t, std::string path, const std::string* file, toml::source_region where)
      : t_(t), path_(std::move(path)), file_(file), where_(where) {}

  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const toml::node* node(const std::string& key) {
    known_.insert(key);
    return t_ ? t_->get(key) : nullptr;
  }
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) {
    const toml::node* n = t_ ? t_->get(key) : nullptr;
    fail(*file_, n ? n->source() : where_, key_path(key), what);
  }

  int64_t integer(const std::string& key, int64_t def, int64_t lo, int64_t hi) {
    const toml::node* n = node(key);
    if (!n) return def;
    if (!n->is_integer()) fail_key(key, expected_int(lo, hi) + ", got " + type_name(*n));
    const int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) fail_key(key, expected_int(lo, hi) + ", got " + std::to_string(v));
    return v;
  }
  double number(const std::string& key, double def, double lo, double hi) {
    const toml::node* n = node(key);
    if (!n) return def;
    if (!n->is_number()) fail_key(key, expected_num(lo, hi) + ", got " + type_name(*n));
    const double v = n->is_integer() ? static_cast<double>(n->as_integer()->get()) : n->as_floating_point()->get();
    if (!(v >= lo && v <= hi)) fail_key(key, expected_num(lo, hi) + ", got " + node_text(*n));
    return v;
  }
  bool boolean(const std::string& key, bool def) {
    const toml::node* n = node(key);
    if (!n) return def;
    if (!n->is_boolean()) fail_key(key, std::string("expected a boolean (true or false), got ") + type_name(*n));
    return n->as_boolean()->get();
  }
  std::string string(const std::string& key, const std::string& def, const std::vector<std::string>& choices,
                     bool required = false) {
    const toml::node* n = node(key);
    if (!n) {
      if (required) fail_key(key, "is required (" + describe_choices(choices) + ")");
      return def;
    }
    if (!n->is_string()) fail_key(key, "expected a string (" + describe_choices(choices) + "), got " + type_name(*n));
    const std::string v = n->as_string()->get();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end())
      fail_key(key, "expected " + describe_choices(choices) + ", got \"" + shorten(v) + "\"");
    if (required && v.empty()) fail_key(key, "must not be empty");
    return v;
  }
  std::vector<int64_t> int_list(const std::string& key, const std::vector<int64_t>& def, int64_t lo, int64_t hi,
                                bool non_empty) {
    const toml::node* n = node(key);
    if (!n) return def;
    const std::string want = "expected an array of integers, each " + expected_int(lo, hi).substr(12);
    if (!n->is_array()) fail_key(key, want + ", got " + type_name(*n));
    std::vector<int64_t> out;
    for (const toml::node& e : *n->as_array()) {
      if (!e.is_integer()) fail(*file_, e.source(), key_path(key), want + ", got " + type_name(e));
      const int64_t v = e.as_integer()->get();
      if (v < lo || v > hi) fail(*file_, e.source(), key_path(key), want + ", got " + std::to_string(v));
      out.push_back(v);
    }
    if (non_empty && out.empty()) fail_key(key, "must not be empty");
    return out;
  }

  std::vector<std::string> string_list(const std::string& key) {
    const toml::node* n = node(key);
    if (!n) return {};
    const std::string want = "expected an array of strings";
    if (!n->is_array()) fail_key(key, want + ", got " + type_name(*n));
    std::vector<std::string> out;
    for (const toml::node& e : *n->as_array()) {
      if (!e.is_string()) fail(*file_, e.source(), key_path(key), want + ", got " + type_name(e));
      out.push_back(e.as_string()->get());
      if (out.back().empty()) fail(*file_, e.source(), key_path(key), "an empty selector");
    }
    if (out.empty()) fail_key(key, "must not be empty");
    return out;
  }
  // "file:line:col: path.key" of a key present (of the table where it is absent).
  std::string where_of(const std::string& key) const {
    const toml::node* n = t_ ? t_->get(key) : nullptr;
    return location(*file_, n ? n->source() : where_) + ": " + key_path(key);
  }

  // Every key not read so far is unknown.
  void done() {
    if (!t_) return;
    for (const auto& [k, v] : *t_) {
      const std::string key(k.str());
      if (known_.count(key)) continue;
      std::ostringstream os;
      os << "unknown key; expected one of:";
      for (const std::string& kk : known_) os << ' ' << kk;
      os << did_you_mean(key, std::vector<std::string>(known_.begin(), known_.end()));
      fail(*file_, v.source(), key_path(key), os.str());
    }
  }
  const toml::table* table() const { return t_; }
  const toml::source_region& where() const { return where_; }

 private:
  static std::string expected_int(int64_t lo, int64_t hi) {
    std::ostringstream os;
    os << "expected an integer in [" << lo << ", " << hi << "]";
    return os.str();
  }
  static std::string expected_num(double lo, double hi) {
    std::ostringstream os;
    os << "expected a number in [" << lo << ", " << hi << "]";
    return os.str();
  }
  static std::string describe_choices(const std::vector<std::string>& choices) {
    if (choices.empty()) return "any text";
    std::string out = "one of";
    for (const std::string& c : choices) out += " \"" + c + "\"";
    return out;
  }

  const toml::table* t_;
  std::string path_;
  const std::string* file_;
  toml::source_region where_;
  std::set<std::string> known_;
};

Section section(const toml::table& root, const std::string& key, const std::string* file, bool required = false) {
  const toml::node* n = root.get(key);
  if (!n) {
    if (required) fail(*file, root.source(), key, "the [" + key + "] table is required");
    return Section(nullptr, key, file, root.source());
  }
  if (!n->is_table()) fail(*file, n->source(), key, std::string("expected a table, got ") + type_name(*n));
  return Section(n->as_table(), key, file, n->source());
}

nlohmann::json to_json(const toml::node& n) {
  if (n.is_table()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : *n.as_table()) j[std::string(k.str())] = to_json(v);
    return j;
  }
  if (n.is_array()) {
    nlohmann::json j = nlohmann::json::array();
    for (const toml::node& e : *n.as_array()) j.push_back(to_json(e));
    return j;
  }
  if (n.is_integer()) return n.as_integer()->get();
  if (n.is_floating_point()) return n.as_floating_point()->get();
  if (n.is_boolean()) return n.as_boolean()->get();
  if (n.is_string()) return n.as_string()->get();
  return node_text(n);
}

std::vector<std::string> names_of_tasks() {
  std::vector<std::string> out;
  for (const data::TaskInfo& t : data::task_infos()) out.push_back(t.name);
  return out;
}

std::vector<std::string> names_of_families() {
  std::vector<std::string> out;
  for (const FamilyEntry& f : families()) out.emplace_back(f.name);
  return out;
}

// The task's own parameters present in `s`, typed and ranged by its ParamSpecs, into `params`.
void read_task_params(Section& s, const std::string& task, data::Params& params) {
  const auto infos = data::task_infos();
  const auto info = std::find_if(infos.begin(), infos.end(), [&](const data::TaskInfo& t) { return t.name == task; });
  for (const data::ParamSpec& p : info->params) {
    const toml::node* n = s.node(p.key);
    if (!n) continue;
    std::visit(
        [&](const auto& def) {
          using V = std::decay_t<decltype(def)>;
          if constexpr (std::is_same_v<V, int64_t>) {
            params[p.key] = s.integer(p.key, def, static_cast<int64_t>(p.min), static_cast<int64_t>(p.max));
          } else if constexpr (std::is_same_v<V, double>) {
            params[p.key] = s.number(p.key, def, p.min, p.max);
          } else if constexpr (std::is_same_v<V, bool>) {
            params[p.key] = s.boolean(p.key, def);
          } else {
            params[p.key] = s.string(p.key, def, p.choices);
          }
        },
        p.default_value);
  }
  s.done();
}

// [task]: name plus the task's own parameters.
void read_task(const toml::table& root, const std::string* file, Experiment& e) {
  Section s = section(root, "task", file, true);
  e.task = s.string("name", "", names_of_tasks(), true);
  read_task_params(s, e.task, e.task_params);
}

// [[train.phase]]: steps and task overrides; each phase's task is built here so a bad combination
// stops before anything runs.
void read_phases(const toml::table& root, const std::string* file, Experiment& e) {
  const toml::table* train = root.get_as<toml::table>("train");
  const toml::node* n = train ? train->get("phase") : nullptr;
  if (!n) return;
  if (!n->is_array_of_tables())
    fail(*file, n->source(), "train.phase", std::string("expected [[train.phase]] tables, got ") + type_name(*n));
  int64_t total = 0;
  const toml::array& phases = *n->as_array();
  for (std::size_t i = 0; i < phases.size(); ++i) {
    const std::string path = "train.phase[" + std::to_string(i) + "]";
    Section s(phases[i].as_table(), path, file, phases[i].source());
    TrainPhase ph;
    if (!s.node("steps")) s.fail_key("steps", "is required (an integer >= 1)");
    ph.steps = static_cast<int>(s.integer("steps", 0, 1, 10'000'000));
    total += ph.steps;
    if (total > e.train.steps)
      s.fail_key("steps", "the phases' steps add up to " + std::to_string(total) + ", more than train.steps (" +
                              std::to_string(e.train.steps) + ")");
    ph.task_params = e.task_params;
    const toml::node* t = s.node("task");
    if (t && !t->is_table()) s.fail_key("task", std::string("expected a table of [task] parameters, got ") + type_name(*t));
    Section ts(t ? t->as_table() : nullptr, path + ".task", file, t ? t->source() : phases[i].source());
    read_task_params(ts, e.task, ph.task_params);
    s.done();
    try {
      data::make_task(e.task, ph.task_params);
    } catch (const Error& err) {
      fail(*file, t ? t->source() : phases[i].source(), path + ".task", err.what());
    }
    e.train_phases.push_back(std::move(ph));
  }
}

// The keys [train] and each [[stage]] share: batch and optimizer settings, read over `t`'s values
// (a stage's defaults are [train]'s). min_lr defaults to lr / 10.
void read_optimizer(Section& s, TrainOptions& t) {
  t.batch_size = static_cast<int>(s.integer("batch_size", t.batch_size, 1, 65536));
  const bool lr_given = s.table() && s.table()->get("lr");
  t.lr = s.number("lr", t.lr, 0.0, 10.0);
  t.min_lr = s.number("min_lr", lr_given ? t.lr / 10 : t.min_lr, 0.0, 10.0);
  t.warmup_steps = static_cast<int>(s.integer("warmup_steps", t.warmup_steps, -1, 10'000'000));
  t.schedule = s.string("schedule", t.schedule, {"constant", "linear", "cosine"});
  t.weight_decay = s.number("weight_decay", t.weight_decay, 0.0, 10.0);
  t.beta1 = s.number("beta1", t.beta1, 0.0, 0.999999);
  t.beta2 = s.number("beta2", t.beta2, 0.0, 0.999999);
  t.grad_clip = s.number("grad_clip", t.grad_clip, 0.0, 1e9);
  t.precision = s.string("precision", t.precision, {"fp32", "bf16"});
  if (t.min_lr > t.lr) s.fail_key(s.table() && s.table()->get("min_lr") ? "min_lr" : "lr", "min_lr must not exceed lr");
}

// The selection keys [train] (one stage) and each [[stage]] share: train / freeze, lr_scale, init_from.
void read_selection(Section& s, Stage& st, const std::string* file) {
  st.trains = s.string_list("train");
  st.freezes = s.string_list("freeze");
  if (!st.trains.empty() && !st.freezes.empty())
    s.fail_key("freeze", "give `train` (what trains) or `freeze` (what does not), not both");
  if (!st.trains.empty()) st.where["train"] = s.where_of("train");
  if (!st.freezes.empty()) st.where["freeze"] = s.where_of("freeze");
  if (const toml::node* n = s.node("lr_scale")) {
    if (!n->is_table()) s.fail_key("lr_scale", std::string("expected a table of selector = multiplier, got ") + type_name(*n));
    for (const auto& [k, v] : *n->as_table()) {
      const std::string key = s.key_path("lr_scale") + "." + std::string(k.str());
      const std::optional<double> x = v.value<double>();
      if (!x || !v.is_number() || !(*x >= 0.0 && *x <= 1000.0))
        fail(*file, v.source(), key, std::string("expected a multiplier in [0, 1000], got ") + node_text(v));
      st.lr_scale.emplace_back(std::string(k.str()), *x);
      st.where["lr_scale." + std::string(k.str())] = location(*file, v.source()) + ": " + key;
    }
  }
  if (const toml::node* n = s.node("init_from")) {
    if (!n->is_table())
      s.fail_key("init_from", std::string("expected a table of selector = \"model folder\" or \"FILE.h5:RUN_ID\", got ") +
                                  type_name(*n));
    for (const auto& [k, v] : *n->as_table()) {
      const std::string key = s.key_path("init_from") + "." + std::string(k.str());
      if (!v.is_string() || v.as_string()->get().empty())
        fail(*file, v.source(), key, std::string("expected a kept model's folder or \"FILE.h5:RUN_ID\", got ") + type_name(v));
      st.init_from.emplace_back(std::string(k.str()), v.as_string()->get());
      st.where["init_from." + std::string(k.str())] = location(*file, v.source()) + ": " + key;
    }
  }
}

void read_train(const toml::table& root, const std::string* file, TrainOptions& t, Stage& implicit, int ranks) {
  Section s = section(root, "train", file);
  t.steps = static_cast<int>(s.integer("steps", t.steps, 0, 10'000'000));
  t.min_lr = t.lr / 10;
  read_optimizer(s, t);
  t.data_parallel = s.boolean("data_parallel", t.data_parallel);
  t.checkpoint_every = static_cast<int>(s.integer("checkpoint_every", t.checkpoint_every, 0, 10'000'000));
  t.checkpoint_keep = static_cast<int>(s.integer("checkpoint_keep", t.checkpoint_keep, 1, 1000));
  s.node("phase");  // [[train.phase]]: read_phases
  read_selection(s, implicit, file);
  if (root.get("stage")) {
    for (const char* key : {"steps", "phase", "train", "freeze", "lr_scale", "init_from"})
      if (s.table() && s.table()->get(key))
        s.fail_key(key, std::string("with [[stage]] tables, each stage gives its own `") + key + "`");
  }
  s.done();
  if (t.data_parallel && t.batch_size % ranks != 0) {
    Section again = section(root, "train", file);
    again.fail_key(again.table() && again.table()->get("batch_size") ? "batch_size" : "data_parallel",
                   "data_parallel splits each batch over the " + std::to_string(ranks) + " ranks of this job, but " +
                       std::to_string(t.batch_size) + " does not divide by " + std::to_string(ranks));
  }
}

// A stage's task table: `name` (default [task]'s) and parameters over [task]'s (over the task's
// defaults when it names another task). Built here, so a bad combination stops before anything runs.
void read_stage_task(const toml::node* t, const std::string& path, const std::string* file,
                     toml::source_region where, const Experiment& e, std::string& task, data::Params& params) {
  if (t && !t->is_table()) fail(*file, t->source(), path, std::string("expected a table of task parameters, got ") + type_name(*t));
  Section ts(t ? t->as_table() : nullptr, path, file, t ? t->source() : where);
  task = ts.string("name", e.task, names_of_tasks());
  params = task == e.task ? e.task_params : data::Params{};
  read_task_params(ts, task, params);
  try {
    data::make_task(task, params);
  } catch (const Error& err) {
    fail(*file, t ? t->source() : where, path, err.what());
  }
}

// [[stage]] tables, or the one stage of an experiment without them ([train], [task], [[train.phase]]).
void read_stages(const toml::table& root, const std::string* file, Experiment& e, Stage implicit) {
  const toml::node* n = root.get("stage");
  if (!n) {
    implicit.name = "train";
    implicit.task = e.task;
    implicit.task_params = e.task_params;
    implicit.train = e.train;
    implicit.phases = e.train_phases;
    implicit.where["stage"] = location(*file, root.source()) + ": train";
    e.stages = {std::move(implicit)};
    return;
  }
  if (!n->is_array_of_tables()) fail(*file, n->source(), "stage", std::string("expected [[stage]] tables, got ") + type_name(*n));
  e.staged = true;
  int64_t total = 0;
  std::set<std::string> names;
  const toml::array& stages = *n->as_array();
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const std::string path = "stage[" + std::to_string(i) + "]";
    Section s(stages[i].as_table(), path, file, stages[i].source());
    Stage st;
    st.where["stage"] = location(*file, stages[i].source()) + ": " + path;
    st.name = s.string("name", "", {}, true);
    if (st.name.size() > 64) s.fail_key("name", "at most 64 characters");
    for (const char c : st.name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
        s.fail_key("name", "use letters, digits, '_' and '-' only, got \"" + shorten(st.name) + "\"");
    if (!names.insert(st.name).second) s.fail_key("name", "two stages are named \"" + st.name + "\"");
    if (!s.node("steps")) s.fail_key("steps", "is required (an integer >= 1)");
    st.train = e.train;
    st.train.steps = static_cast<int>(s.integer("steps", 0, 1, 10'000'000));
    total += st.train.steps;
    if (total > 10'000'000) s.fail_key("steps", "the stages' steps add up to more than 10,000,000");
    read_optimizer(s, st.train);
    const toml::node* t = s.node("task");
    const toml::node* m = s.node("mix");
    if (t && m) s.fail_key("mix", "give `task` (one task) or `mix` (several by weight), not both");
    read_stage_task(t, path + ".task", file, stages[i].source(), e, st.task, st.task_params);
    if (m) {
      if (!m->is_array_of_tables() || m->as_array()->empty())
        s.fail_key("mix", std::string("expected an array of { task = {...}, weight = w } tables, got ") + type_name(*m));
      const toml::array& parts = *m->as_array();
      for (std::size_t k = 0; k < parts.size(); ++k) {
        const std::string mpath = path + ".mix[" + std::to_string(k) + "]";
        Section ms(parts[k].as_table(), mpath, file, parts[k].source());
        Stage::MixPart part;
        read_stage_task(ms.node("task"), mpath + ".task", file, parts[k].source(), e, part.task, part.params);
        part.weight = ms.number("weight", 1.0, 1e-9, 1e9);
        ms.done();
        st.mix.push_back(std::move(part));
      }
    }
    read_selection(s, st, file);
    s.done();
    e.stages.push_back(std::move(st));
  }
  if (e.stages.empty()) fail(*file, n->source(), "stage", "at least one [[stage]] is needed");
  e.train.steps = static_cast<int>(total);
}

void read_sizes(const toml::table& root, const std::string* file, ModelSizes& m, int64_t task_image) {
  const toml::node* model = root.get("model");
  if (model && !model->is_table())
    fail(*file, model->source(), "model", std::string("expected a table, got ") + type_name(*model));
  const toml::table empty;
  const toml::table& mt = model ? *model->as_table() : empty;
  for (const auto& [k, v] : mt) {
    const std::string key(k.str());
    if (key != "text" && key != "vision" && key != "initializer_range")
      fail(*file, v.source(), "model." + key,
           "unknown key; expected text, vision or initializer_range" +
               did_you_mean(key, {"text", "vision", "initializer_range"}));
  }
  if (const toml::node* ir = mt.get("initializer_range")) {
    const std::optional<double> x = ir->value<double>();
    if (!x || !ir->is_number() || !(*x > 0.0 && *x <= 10.0))
      fail(*file, ir->source(), "model.initializer_range", "expected a number in (0, 10], got " + node_text(*ir));
    m.initializer_range = *x;
  }
  Section t = section(mt, "text", file);
  Section tt(t.table(), "model.text", file, model ? model->source() : root.source());
  m.text.hidden_size = tt.integer("hidden_size", m.text.hidden_size, 2, 65536);
  m.text.num_hidden_layers = tt.integer("num_hidden_layers", m.text.num_hidden_layers, 1, 1024);
  m.text.num_attention_heads = tt.integer("num_attention_heads", m.text.num_attention_heads, 1, 1024);
  m.text.num_key_value_heads = tt.integer("num_key_value_heads", m.text.num_attention_heads, 1, 1024);
  m.text.intermediate_size = tt.integer("intermediate_size", 4 * m.text.hidden_size, 1, 1 << 20);
  tt.done();
  if (m.text.hidden_size % m.text.num_attention_heads != 0)
    tt.fail_key("num_attention_heads", "must divide hidden_size (" + std::to_string(m.text.hidden_size) + ")");
  if ((m.text.hidden_size / m.text.num_attention_heads) % 2 != 0)
    tt.fail_key("num_attention_heads", "hidden_size / num_attention_heads must be even (rotary halves)");
  if (m.text.num_attention_heads % m.text.num_key_value_heads != 0)
    tt.fail_key("num_key_value_heads",
                "must divide num_attention_heads (" + std::to_string(m.text.num_attention_heads) + ")");

  Section v0 = section(mt, "vision", file);
  Section v(v0.table(), "model.vision", file, model ? model->source() : root.source());
  m.vision.hidden_size = v.integer("hidden_size", m.vision.hidden_size, 2, 65536);
  m.vision.num_hidden_layers = v.integer("num_hidden_layers", m.vision.num_hidden_layers, 0, 1024);
  m.vision.num_attention_heads = v.integer("num_attention_heads", m.vision.num_attention_heads, 1, 1024);
  m.vision.intermediate_size = v.integer("intermediate_size", 4 * m.vision.hidden_size, 1, 1 << 20);
  m.vision.patch_size = v.integer("patch_size", m.vision.patch_size, 1, 1024);
  m.vision.image_size = v.integer("image_size", task_image, 1, 16384);
  v.done();
  if (m.vision.hidden_size % m.vision.num_attention_heads != 0)
    v.fail_key("num_attention_heads", "must divide hidden_size (" + std::to_string(m.vision.hidden_size) + ")");
  if (m.vision.image_size < m.vision.patch_size)
    v.fail_key(v.table() && v.table()->get("image_size") ? "image_size" : "patch_size",
               "the image (" + std::to_string(m.vision.image_size) + " px) is smaller than a patch (" +
                   std::to_string(m.vision.patch_size) + " px)");
}

// A whole experiment from a (possibly sweep-modified) document.
std::vector<std::string> key_parts(const std::string& key, std::string& error);

Experiment parse(const toml::table& root, const std::string& file, int ranks) {
  const std::string* f = &file;
  Experiment e;
  e.file = file;
  for (const auto& [k, v] : root) {
    static const std::set<std::string> kTop = {"experiment", "task", "train", "stage", "eval",
                                               "measure", "model", "variant", "sweep"};
    if (!kTop.count(std::string(k.str())))
      fail(file, v.source(), std::string(k.str()),
           "unknown table; expected experiment, task, train, stage, eval, measure, model, variant or sweep" +
               did_you_mean(k.str(), std::vector<std::string>(kTop.begin(), kTop.end())));
  }
  {
    Section s = section(root, "experiment", f, true);
    e.name = s.string("name", "", {}, true);
    if (e.name.size() > kMaxNameChars)
      s.fail_key("name", "is " + std::to_string(e.name.size()) + " characters long; at most " +
                             std::to_string(kMaxNameChars) + " (it names the results file and its folder)");
    for (const char c : e.name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
        s.fail_key("name", "use letters, digits, '_' and '-' only (it names the results file), got \"" + shorten(e.name) + "\"");
    e.description = s.string("description", "", {});
    e.seeds.clear();
    for (const int64_t v : s.int_list("seeds", {0}, 0, int64_t{1} << 40, true)) e.seeds.push_back(static_cast<uint64_t>(v));
    {
      std::set<uint64_t> uniq(e.seeds.begin(), e.seeds.end());
      if (uniq.size() != e.seeds.size()) s.fail_key("seeds", "lists a seed twice");
    }
    e.threads = static_cast<int>(s.integer("threads", 1, 1, 1024));
    s.done();
  }
  read_task(root, f, e);
  const std::unique_ptr<data::Task> task = [&] {
    try {
      return data::make_task(e.task, e.task_params);
    } catch (const Error& err) {
      fail(file, root.get("task")->source(), "task", err.what());
    }
  }();
  Stage implicit;
  read_train(root, f, e.train, implicit, ranks);
  if (root.get("stage") == nullptr) read_phases(root, f, e);
  read_stages(root, f, e, std::move(implicit));
  {
    Section s = section(root, "eval", f);
    e.eval.samples = s.integer("samples", e.eval.samples, 1, int64_t{1} << 32);
    e.eval.batch_size = static_cast<int>(s.integer("batch_size", e.eval.batch_size, 1, 65536));
    e.eval.gallery = static_cast<int>(s.integer("gallery", e.eval.gallery, 0, 100000));
    e.eval.keep_items = s.boolean("keep_items", e.eval.keep_items);
    e.eval.val_samples = s.integer("val_samples", e.eval.val_samples, 0, int64_t{1} << 32);
    e.eval.every = static_cast<int>(s.integer("every", e.eval.every, 0, 10'000'000));
    e.eval.threshold = s.number("threshold", e.eval.threshold, 0.0, 1.0);
    s.done();
  }
  read_sizes(root, f, e.sizes, task->max_image_size().first);
  {
    Section s = section(root, "measure", f);
    e.measure.enabled = s.boolean("enabled", e.measure.enabled);
    e.measure.resolutions = s.int_list("resolutions", {}, 1, 16384, false);
    e.measure.warmup = static_cast<int>(s.integer("warmup", e.measure.warmup, 0, 10000));
    e.measure.repeats = static_cast<int>(s.integer("repeats", e.measure.repeats, 1, 100000));
    e.measure.decode_tokens = static_cast<int>(s.integer("decode_tokens", e.measure.decode_tokens, 1, 4096));
    s.done();
    if (e.measure.resolutions.empty()) e.measure.resolutions = {task->max_image_size().first};
  }
  // [[variant]]: family, optional name, optional [variant.processor], every other key a family key.
  const toml::node* vn = root.get("variant");
  if (!vn) fail(file, root.source(), "variant", "at least one [[variant]] is required");
  if (!vn->is_array_of_tables())
    fail(file, vn->source(), "variant", "expected an array of tables ([[variant]] sections)");
  std::set<std::string> names;
  int idx = 0;
  for (const toml::node& item : *vn->as_array()) {
    const toml::table& vt = *item.as_table();
    const std::string path = "variant[" + std::to_string(idx++) + "]";
    Section s(&vt, path, f, vt.source());
    Variant v;
    v.family = s.string("family", "", names_of_families(), true);
    v.name = s.string("name", v.family, {});
    if (v.name.size() > kMaxNameChars)
      s.fail_key("name", "is " + std::to_string(v.name.size()) + " characters long; at most " +
                             std::to_string(kMaxNameChars) + " (it names runs)");
    for (const char c : v.name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
        s.fail_key("name", "use letters, digits, '_' and '-' only (it names runs), got \"" + shorten(v.name) + "\"");
    if (!names.insert(v.name).second)
      s.fail_key(vt.get("name") ? "name" : "family",
                 "two variants are named \"" + v.name + "\"; give each a distinct `name`");
    if (const toml::node* p = s.node("processor")) {
      if (!p->is_table()) s.fail_key("processor", std::string("expected a table, got ") + type_name(*p));
      v.processor = to_json(*p);
    }
    if (const toml::node* p = s.node("init_std")) {
      if (!p->is_table()) s.fail_key("init_std", std::string("expected a table of \"glob\" = std, got ") + type_name(*p));
      for (const auto& [k, val] : *p->as_table()) {
        const std::string key = path + ".init_std." + std::string(k.str());
        const std::optional<double> std = val.value<double>();
        if (!std || !val.is_number()) fail(file, val.source(), key, std::string("expected a number, got ") + type_name(val));
        if (!(*std >= 0.0 && *std <= 100.0)) fail(file, val.source(), key, "expected a standard deviation in [0, 100]");
        v.init_std.emplace_back(std::string(k.str()), *std);
      }
    }
    if (const toml::node* p = s.node("set")) {
      // Checked here for form; load_experiment applies the values to this variant's runs.
      if (!p->is_table()) s.fail_key("set", std::string("expected a table of \"key.path\" = value, got ") + type_name(*p));
      for (const auto& [k, val] : *p->as_table()) {
        const std::string key(k.str());
        std::string error;
        const std::vector<std::string> parts = key_parts(key, error);
        if (error.empty() && parts.size() < 2) error = "expected a dotted key path such as \"train.lr\"";
        if (error.empty() && !std::set<std::string>{"task", "train", "eval", "measure", "model", "stage"}.contains(parts[0]))
          error = "sets a key of [" + parts[0] + "]; a variant may set keys of [task], [train], [eval], [measure], [model] and a [[stage]] (stage.NAME.key; its own family keys go in the variant itself)";
        if (!error.empty()) fail(file, val.source(), path + ".set.\"" + shorten(key) + "\"", error);
      }
    }
    const FamilyEntry& fam = family_named(v.family);
    ModelSizes probe = e.sizes;
    probe.vocab_size = 64;
    for (const auto& [k, val] : vt) {
      const std::string key(k.str());
      if (key == "family" || key == "name" || key == "processor" || key == "init_std" || key == "set") continue;
      nlohmann::json one = nlohmann::json::object();
      one[key] = to_json(val);
      try {
        fam.build_config(probe, one);  // one key at a time, so an error points at its line
      } catch (const ConfigError& err) {
        std::string what = err.what();
        const std::string prefix = v.family + ": ";
        if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
        if (what.rfind(key + ": ", 0) == 0) what = what.substr(key.size() + 2);
        fail(file, val.source(), path + "." + key, what);
      }
      v.family_keys[key] = to_json(val);
    }
    e.variants.push_back(std::move(v));
  }
  return e;
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (const char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '=') ? c : '_';
  return out;
}

// The parts of a sweep's dotted key path, or an error when one is empty ("", "train.", "a..b").
std::vector<std::string> key_parts(const std::string& key, std::string& error) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (true) {
    const std::size_t dot = key.find('.', begin);
    parts.push_back(key.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
    if (parts.back().empty()) {
      error = "expected a dotted key path such as \"train.lr\" or \"variant.hidden_act\", with no empty part";
      return {};
    }
    if (dot == std::string::npos) return parts;
    begin = dot + 1;
  }
}

// Sets a dotted path ("train.lr", "model.text.hidden_size", "variant.resampler_n_latents") in a copy
// of the document. Returns an error when the path runs through a value that is not a table (such as
// "task.name.x", or "variant.family.x" in each [[variant]]); a path to a key that does not exist yet
// is set, and parse() then reports it as unknown.
std::string set_path(toml::table& root, const std::string& key, const toml::node& value) {
  std::string error;
  const std::vector<std::string> parts = key_parts(key, error);
  if (!error.empty()) return error;
  const auto through = [&](toml::table* t, std::size_t first, const std::string& where) -> toml::table* {
    std::string path = where;
    for (std::size_t i = first; i + 1 < parts.size(); ++i) {
      path += (path.empty() ? "" : ".") + parts[i];
      toml::node& n = t->insert(parts[i], toml::table{}).first->second;
      if (!n.is_table()) {
        error = path + " is " + type_name(n) + ", not a table, so the path cannot go through it";
        return nullptr;
      }
      t = n.as_table();
    }
    return t;
  };
  if (parts[0] == "stage") {  // stage.NAME.key: the [[stage]] of that name
    toml::array* arr = root.get_as<toml::array>("stage");
    if (parts.size() < 3) return "expected stage.NAME.key, NAME a [[stage]]'s name";
    std::string names;
    for (std::size_t si = 0; arr && si < arr->size(); ++si) {
      toml::table* st = (*arr)[si].as_table();
      const toml::value<std::string>* named = st ? st->get_as<std::string>("name") : nullptr;
      const std::string name = named ? named->get() : "";
      if (name != parts[1]) {
        append_listed(names, "\"" + name + "\"");
        continue;
      }
      st = through(st, 2, "stage[" + std::to_string(si) + "]");
      if (!st) return error;
      st->insert_or_assign(parts.back(), value);
      return "";
    }
    return "no [[stage]] is named \"" + parts[1] + "\"" + (names.empty() ? std::string(" (the experiment has no [[stage]])") : " (the stages: " + names + ")");
  }
  if (parts.size() >= 2 && parts[0] == "variant") {
    toml::array* arr = root.get_as<toml::array>("variant");
    if (!arr) return "";  // parse() reports the missing or malformed [[variant]]
    for (std::size_t vi = 0; vi < arr->size(); ++vi) {
      toml::table* t = (*arr)[vi].as_table();
      if (!t) return "";
      t = through(t, 1, "variant[" + std::to_string(vi) + "]");
      if (!t) return error;
      t->insert_or_assign(parts.back(), value);
    }
    return "";
  }
  toml::table* t = through(&root, 0, "");
  if (!t) return error;
  t->insert_or_assign(parts.back(), value);
  return "";
}

// A run's FLOPs from one prefill and one decode step at batch 1 (counted by the ops): training takes
// about 3 forward passes (forward + backward) per sample, evaluation a prefill and up to
// max_answer_tokens + 1 decode steps per item, measurement a prefill and decode_tokens decode steps
// per repeat and resolution (taken at the task's size). Only the ratios between runs matter.
double estimated_cost(Vlm& vlm, const data::Task& task, const Experiment& e) {
  const InferenceCost c = inference_cost(vlm, task.sample(data::Split::kTrain, 0));
  const auto prefill = static_cast<double>(c.prefill_flops), decode = static_cast<double>(c.decode_flops_per_token);
  double f = 3.0 * prefill * e.train.steps * e.train.batch_size;
  const double points = e.eval.val_samples == 0 ? 0.0 : 2.0 + e.train.steps / std::max(1, e.eval.every_or_default(e.train.steps));
  f += static_cast<double>(e.eval.samples + static_cast<int64_t>(points) * e.eval.val_samples) *
       (prefill + decode * static_cast<double>(task.max_answer_tokens() + 1));
  if (e.measure.enabled)
    f += static_cast<double>(e.measure.resolutions.size()) * (e.measure.warmup + e.measure.repeats) *
         (prefill + decode * e.measure.decode_tokens);
  return f;
}

// What a run asks of its model's memory, for check_memory before the model is built: training
// (weights, gradients, AdamW's moments and the batch's activations), evaluation batches and each
// measurement resolution (one image of that side).
std::vector<Workload> memory_uses(const Experiment& e, const data::Task& task) {
  const auto [h, w] = task.max_image_size();
  const auto images = static_cast<double>(task.max_images());
  std::vector<Workload> uses;
  Workload train;
  train.what = "training", train.key = "train.batch_size", train.value = std::to_string(e.train.batch_size);
  train.image_key = "task.image_size", train.fixed_image_key = "model.vision.image_size", train.training = true;
  train.batch = e.train.batch_size, train.images = images;
  train.image_height = static_cast<double>(h), train.image_width = static_cast<double>(w);
  if (e.train.steps > 0) uses.push_back(train);
  Workload eval = train;
  eval.what = "evaluation", eval.key = "eval.batch_size", eval.value = std::to_string(e.eval.batch_size);
  eval.training = false, eval.batch = e.eval.batch_size;
  uses.push_back(eval);
  if (e.measure.enabled)
    for (const int64_t r : e.measure.resolutions) {
      Workload m = eval;
      m.what = "measurement at " + std::to_string(r) + " x " + std::to_string(r);
      m.key = "measure.resolutions", m.value = std::to_string(r), m.image_key.clear(), m.fixed_image_key.clear();
      m.batch = 1, m.image_height = m.image_width = static_cast<double>(r);
      uses.push_back(m);
    }
  return uses;
}

}  // namespace

std::string Stage::task_text() const {
  const auto one = [](const std::string& which, const data::Params& params) {
    std::string out = which;
    std::string ps;
    for (const auto& [k, v] : params)
      std::visit([&, key = k](const auto& x) {
        std::ostringstream os;
        os << x;
        append_listed(ps, key + "=" + os.str());
      }, v);
    return ps.empty() ? out : out + " {" + ps + "}";
  };
  if (mix.empty()) return one(task, task_params);
  std::string out = "mix(";
  for (std::size_t k = 0; k < mix.size(); ++k) {
    std::ostringstream w;
    w << mix[k].weight;
    if (k > 0) out += "; ";
    out += w.str() + " x " + one(mix[k].task, mix[k].params);
  }
  return out + ")";
}

std::unique_ptr<data::Task> make_stage_task(const Stage& s) {
  if (s.mix.empty()) return data::make_task(s.task, s.task_params);
  std::vector<std::unique_ptr<data::Task>> parts;
  std::vector<double> weights;
  for (const Stage::MixPart& p : s.mix) {
    parts.push_back(data::make_task(p.task, p.params));
    weights.push_back(p.weight);
  }
  return data::make_mix(std::move(parts), std::move(weights));
}

VlmSpec RunSpec::vlm_spec() const {
  return VlmSpec{.family = variant.family,
                 .sizes = config.sizes,
                 .family_keys = variant.family_keys,
                 .processor_options = variant.processor,
                 .init_seed = seed,
                 .init_std = variant.init_std};
}

LoadedExperiment load_experiment(const std::string& path, int ranks) {
  VLM_CHECK(ranks >= 1, "load_experiment: " << ranks << " ranks");
  {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      throw ConfigError(path + ": is a directory; give the experiment's TOML file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the experiment file");
  std::stringstream buf;
  buf << in.rdbuf();
  return load_experiment_text(buf.str(), path, ranks);
}

LoadedExperiment load_experiment_text(const std::string& text, const std::string& path, int ranks) {
  VLM_CHECK(ranks >= 1, "load_experiment: " << ranks << " ranks");
  LoadedExperiment out;
  out.toml_text = text;
  toml::table doc;
  try {
    doc = toml::parse(out.toml_text, path);
  } catch (const toml::parse_error& err) {
    fail(path, err.source(), "(syntax)", std::string(err.description()));
  }
  out.base = parse(doc, path, ranks);

  // Sweep: every combination of the listed values, in file order (the last key varies fastest).
  std::vector<std::pair<std::string, const toml::array*>> sweep;
  std::vector<toml::source_region> sweep_where;
  if (const toml::node* sn = doc.get("sweep")) {
    if (!sn->is_table()) fail(path, sn->source(), "sweep", std::string("expected a table, got ") + type_name(*sn));
    for (const auto& [k, v] : *sn->as_table()) {
      const std::string key(k.str());
      if (!v.is_array() || v.as_array()->empty())
        fail(path, v.source(), "sweep." + shorten(key), "expected a non-empty array of values");
      std::string error;
      key_parts(key, error);
      if (!error.empty()) fail(path, v.source(), "sweep.\"" + shorten(key) + "\"", error);
      // Each value names runs: a value listed twice would give two runs one id.
      std::set<std::string> seen;
      for (const toml::node& e : *v.as_array())
        if (!seen.insert(node_text(e)).second)
          fail(path, e.source(), "sweep." + shorten(key), "lists the value " + shorten(node_text(e)) + " twice");
      sweep.emplace_back(key, v.as_array());
      sweep_where.push_back(v.source());
    }
  }
  std::vector<std::size_t> idx(sweep.size(), 0);
  // Odometer over the sweep values; with no sweep, one point.
  const auto advance = [&] {
    for (std::size_t i = sweep.size(); i-- > 0;) {
      if (++idx[i] < sweep[i].second->size()) return true;
      idx[i] = 0;
    }
    return false;
  };
  std::set<std::string> run_ids;
  do {
    toml::table point_doc = doc;
    point_doc.erase("sweep");
    std::vector<std::pair<std::string, std::string>> point;
    for (std::size_t i = 0; i < sweep.size(); ++i) {
      const toml::node& val = *sweep[i].second->get(idx[i]);
      const std::string error = set_path(point_doc, sweep[i].first, val);
      if (!error.empty()) fail(path, sweep_where[i], "sweep." + shorten(sweep[i].first), error);
      point.emplace_back(sweep[i].first, node_text(val));
    }
    Experiment e;
    try {
      e = parse(point_doc, path, ranks);
    } catch (const ConfigError& err) {
      if (sweep.empty()) throw;
      std::ostringstream os;
      os << location(path, sweep_where.front()) << ": sweep point";
      for (const auto& [k, v] : point) os << ' ' << shorten(k) << '=' << shorten(v);
      os << ": " << err.what();
      throw ConfigError(os.str());
    }
    for (std::size_t vi = 0; vi < e.variants.size(); ++vi) {
      // A variant's `set` table changes the experiment's keys for its runs alone (each family at its
      // own tuned learning rate, say): applied over the sweep point, then the document parsed again.
      toml::table variant_doc = point_doc;
      Experiment ev = e;
      if (const toml::table* set = point_doc.get_as<toml::array>("variant")->get(vi)->as_table()->get_as<toml::table>("set")) {
        for (const auto& [k, val] : *set) {
          const std::string key(k.str());
          for (std::size_t i = 0; i < sweep.size(); ++i)
            if (sweep[i].first == key)
              fail(path, val.source(), "variant[" + std::to_string(vi) + "].set.\"" + shorten(key) + "\"",
                   "is also swept ([sweep]); a run cannot have both values");
          const std::string error = set_path(variant_doc, key, val);
          if (!error.empty()) fail(path, val.source(), "variant[" + std::to_string(vi) + "].set.\"" + shorten(key) + "\"", error);
        }
        try {
          ev = parse(variant_doc, path, ranks);
        } catch (const ConfigError& err) {
          throw ConfigError(location(path, set->source()) + ": variant[" + std::to_string(vi) + "].set: " + err.what());
        }
      }
      for (const uint64_t seed : e.seeds) {
        RunSpec r;
        r.variant = ev.variants[vi];
        r.seed = seed;
        r.sweep_point = point;
        r.config = ev;
        r.config.variants = {ev.variants[vi]};
        r.config.seeds = {seed};
        r.config.train.data_seed = seed;
        for (std::size_t k = 0; k < r.config.stages.size(); ++k) {
          r.config.stages[k].train.data_seed = seed;
          // A sweep point's copy of the document has no source positions; the file's own parse does.
          if (k < out.base.stages.size()) r.config.stages[k].where = out.base.stages[k].where;
        }
        std::ostringstream id;
        id << r.variant.name;
        for (const auto& [k, v] : point) id << '-' << k.substr(k.rfind('.') + 1) << '=' << v;
        id << "-s" << seed;
        r.run_id = sanitize(id.str());
        if (r.run_id.size() > kMaxRunIdChars)
          fail(path, sweep.empty() ? doc.source() : sweep_where.front(), "sweep",
               "run id \"" + shorten(r.run_id) + "\" is " + std::to_string(r.run_id.size()) +
                   " characters long; at most " + std::to_string(kMaxRunIdChars) +
                   " (it names the run's folders): use shorter sweep values or variant names");
        if (!run_ids.insert(r.run_id).second)
          fail(path, sweep.empty() ? doc.source() : sweep_where.front(), "sweep",
               "two runs would have the id \"" + shorten(r.run_id) +
                   "\" (sweep values that differ only in characters a run id cannot hold)");
        toml::table run_doc = variant_doc;
        toml::array variants;
        variants.push_back(*variant_doc.get_as<toml::array>("variant")->get(vi));
        run_doc.insert_or_assign("variant", std::move(variants));
        toml::table* ex = run_doc.get_as<toml::table>("experiment");
        toml::array seeds;
        seeds.push_back(static_cast<int64_t>(seed));
        ex->insert_or_assign("seeds", std::move(seeds));
        std::ostringstream os;
        os << run_doc;
        r.resolved_toml = os.str();
        out.runs.push_back(std::move(r));
      }
    }
  } while (advance());

  // Build each run's model once: an impossible combination (a family rejecting the sizes) stops here.
  // The same model gives the cost estimate (seeds change neither).
  std::map<std::string, double> checked;
  const toml::array* variants = doc.get_as<toml::array>("variant");
  for (RunSpec& r : out.runs) {
    std::string key = r.variant.name;
    for (const auto& [k, v] : r.sweep_point) key += "|" + k + "=" + v;
    if (const auto it = checked.find(key); it != checked.end()) {
      r.cost_flops = it->second;
      continue;
    }
    try {
      const auto task = data::make_task(r.config.task, r.config.task_params);
      check_memory(r.vlm_spec(), *task, memory_uses(r.config, *task));  // before anything is built
      std::vector<std::unique_ptr<data::Task>> stage_tasks;
      std::vector<const data::Task*> more;
      for (const Stage& st : r.config.stages) {
        stage_tasks.push_back(make_stage_task(st));
        more.push_back(stage_tasks.back().get());
      }
      Vlm vlm(r.vlm_spec(), *task, more);
      r.cost_flops = checked[key] = estimated_cost(vlm, *task, r.config);
      // Each stage's selection and init_from on this model: a glob that picks nothing, a stage that
      // freezes everything, a missing source or a shape that differs stops here, at its key.
      try {
        for (const Stage& st : r.config.stages) apply_init(vlm, st, plan_stage(vlm, st));
      } catch (const ConfigError& err) {
        throw ConfigError(std::string(err.what()) + " (run " + r.run_id + ")");
      }
    } catch (const Error& err) {
      // A stage's error already points at its key.
      if (std::string(err.what()).rfind(path + ":", 0) == 0) throw ConfigError(err.what());
      std::size_t vi = 0;
      while (vi < out.base.variants.size() && out.base.variants[vi].name != r.variant.name) ++vi;
      // Point at the variant's key the error names, if it names one; else at the [[variant]].
      const toml::table& vt = *variants->get(vi)->as_table();
      toml::source_region where = vt.source();
      const std::string msg = err.what();
      for (const auto& [k, val] : vt) {
        const std::string vkey(k.str());
        if (msg.rfind(vkey + ":", 0) == 0 || msg.find("." + vkey + ":") != std::string::npos ||
            msg.find(" " + vkey + ":") != std::string::npos)
          where = val.source();
      }
      std::ostringstream os;
      os << location(path, where) << ": variant[" << vi << "] (" << r.variant.name;
      for (const auto& [k, v] : r.sweep_point) os << ", " << shorten(k) << '=' << shorten(v);
      os << "): " << err.what();
      throw ConfigError(os.str());
    }
  }
  return out;
}

}  // namespace vlm::exp
