#include "architectures/architecture.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/core/suggest.h"
#include "lib/io/durable.h"
#include "lib/nn/weights.h"

namespace vlm {

Inputs Inputs::from_safetensors(const io::Safetensors& st) {
  Inputs in;
  in.t_ = st.tensors;
  return in;
}

const io::RawTensor& Inputs::at(const std::string& name) const {
  auto it = t_.find(name);
  VLM_CHECK(it != t_.end(), "model input \"" << name << "\" is missing");
  return it->second;
}

Shape Inputs::shape(const std::string& name) const { return at(name).shape; }

std::vector<int64_t> Inputs::ints(const std::string& name) const {
  io::Safetensors st;
  st.source = "inputs";
  st.tensors.emplace(name, at(name));
  return st.to_i64(name);
}

Tensor Inputs::floats(const std::string& name) const {
  const io::RawTensor& raw = at(name);
  // F32 (what every processor writes): one copy straight into the tensor, split over the threads.
  // Pixel values are megabytes per training batch; the general path below copies them three times.
  if (raw.dtype == io::DType::F32 && static_cast<int64_t>(raw.bytes.size()) == raw.numel() * 4) {
    Tensor t = Tensor::empty(raw.shape);
    const std::uint8_t* src = raw.bytes.data();
    auto* dst = reinterpret_cast<std::uint8_t*>(t.data());
    parallel_for(static_cast<int64_t>(raw.bytes.size()), int64_t{1} << 18, [&](int64_t b, int64_t e) {
      std::memcpy(dst + b, src + b, static_cast<std::size_t>(e - b));
    });
    return t;
  }
  io::Safetensors st;
  st.source = "inputs";
  st.tensors.emplace(name, at(name));
  return Tensor::from(at(name).shape, st.to_f32(name));
}

void Inputs::set_ints(const std::string& name, const Shape& shape, const std::vector<int64_t>& values) {
  t_[name] = io::raw_i64(shape, values);
}

void Inputs::set_floats(const std::string& name, const Tensor& t) {
  t_[name] = io::raw_f32(t.shape(), std::span<const float>(t.data(), static_cast<std::size_t>(t.numel())));
}

std::vector<std::string> Inputs::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : t_) out.push_back(k);
  return out;
}

Inputs Architecture::append_tokens(const Inputs& in, const std::vector<int64_t>& tokens) const {
  Inputs out = in;
  const Shape s = in.shape("input_ids");
  VLM_CHECK(s.size() == 2 && static_cast<int64_t>(tokens.size()) == s[0],
            "append_tokens: " << tokens.size() << " tokens for input_ids of shape " << shape_str(s));
  auto extend = [&](const std::string& name, const std::vector<int64_t>& fill) {
    if (!in.has(name)) return;
    const std::vector<int64_t> v = in.ints(name);
    std::vector<int64_t> w;
    for (int64_t b = 0; b < s[0]; ++b) {
      w.insert(w.end(), v.begin() + b * s[1], v.begin() + (b + 1) * s[1]);
      w.push_back(fill[static_cast<std::size_t>(b)]);
    }
    out.set_ints(name, {s[0], s[1] + 1}, w);
  };
  extend("input_ids", tokens);
  extend("attention_mask", std::vector<int64_t>(tokens.size(), 1));
  extend("mm_token_type_ids", std::vector<int64_t>(tokens.size(), 0));
  return out;
}

const FamilyEntry& family_for_config(const io::HfConfig& config) {
  const std::string type = config.get_string("model_type", "");
  std::string known;
  for (const FamilyEntry& f : families()) {
    if (f.hf_model_type == type) return f;
    known += (known.empty() ? "" : ", ") + std::string(f.hf_model_type);
  }
  const std::string shown = type.size() > 200 ? type.substr(0, 200) + "..." : type;
  config.fail("model_type", "\"" + shown + "\" is not a family vlmlab implements (supported: " + known + ")");
}

std::unique_ptr<Architecture> make_architecture(const io::HfConfig& config, Rng& rng) {
  return family_for_config(config).make(config, rng);
}

void load_weights(Architecture& arch, const io::Safetensors& st) {
  // Resolve each of our names to a name in the file, trying the family's alias prefixes.
  const auto aliases = arch.name_aliases();
  io::Safetensors renamed;
  renamed.source = st.source;
  renamed.metadata = st.metadata;
  std::set<std::string> used;
  for (auto& [name, t] : named_parameters(arch)) {
    std::string found = st.contains(name) ? name : "";
    for (std::size_t i = 0; found.empty() && i < aliases.size(); ++i) {
      const auto& [ours, theirs] = aliases[i];
      if (name.rfind(ours, 0) != 0) continue;
      const std::string alt = theirs + name.substr(ours.size());
      if (st.contains(alt)) found = alt;
    }
    if (found.empty()) continue;  // load_module reports it as missing, with our name
    renamed.tensors.emplace(name, st.at(found));
    used.insert(found);
  }
  for (const auto& [name, raw] : st.tensors)
    if (!used.count(name)) renamed.tensors.emplace(name, raw);
  io::load_module(renamed, arch, "", /*strict=*/true);
}

std::unique_ptr<Architecture> load_pretrained(const std::string& dir) {
  const io::HfConfig cfg = io::HfConfig::load(dir + "/config.json");
  Rng rng(0);
  std::unique_ptr<Architecture> arch = make_architecture(cfg, rng);
  load_weights(*arch, io::read_safetensors(dir + "/model.safetensors"));
  return arch;
}

void save_pretrained(Architecture& arch, const std::string& dir) {
  std::filesystem::create_directories(dir);
  io::write_file_atomically(dir + "/config.json", arch.config().json().dump(2) + "\n");
  io::write_file_atomically(dir + "/model.safetensors",
                            io::serialize_safetensors(io::module_state(arch), {{"format", "pt"}}));
  io::write_file_atomically(dir + "/generation_config.json", generation_config(arch.config()).dump(2) + "\n");
}

nlohmann::json generation_config(const io::HfConfig& config) {
  nlohmann::json g = {{"_from_model_config", true}};
  const nlohmann::json& top = config.json();
  const nlohmann::json* text = top.contains("text_config") && top["text_config"].is_object() ? &top["text_config"] : nullptr;
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (top.contains(key) && !top[key].is_null()) g[key] = top[key];
    else if (text && text->contains(key) && !(*text)[key].is_null()) g[key] = (*text)[key];
  }
  return g;
}

std::vector<int64_t> argmax_last(const Tensor& logits, const std::vector<int64_t>& banned) {  // [B, T, V] -> [B]
  const int64_t B = logits.dim(0), T = logits.dim(1), V = logits.dim(2);
  std::vector<int64_t> out;
  for (int64_t b = 0; b < B; ++b) {
    const float* row = logits.data() + (b * T + T - 1) * V;
    int64_t best = -1;
    for (int64_t v = 0; v < V; ++v) {
      if (std::find(banned.begin(), banned.end(), v) != banned.end()) continue;
      if (best < 0 || row[v] > row[best]) best = v;
    }
    out.push_back(best);
  }
  return out;
}

std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, const GenerateOptions& opt) {
  NoGradGuard no_grad;
  const int64_t B = in.shape("input_ids")[0];
  std::vector<std::vector<int64_t>> out(static_cast<std::size_t>(B));
  std::vector<bool> finished(static_cast<std::size_t>(B), false);
  // Picks the next token per row from the logits and records it; returns what to feed back.
  auto step = [&](const Tensor& logits, int i) {
    const std::vector<int64_t> banned = i < opt.min_new_tokens ? opt.eos_token_ids : std::vector<int64_t>{};
    std::vector<int64_t> next = argmax_last(logits, banned);
    for (std::size_t b = 0; b < next.size(); ++b) {
      if (finished[b]) next[b] = opt.pad_token_id;
      else if (std::find(opt.eos_token_ids.begin(), opt.eos_token_ids.end(), next[b]) != opt.eos_token_ids.end())
        finished[b] = true;
      out[b].push_back(next[b]);
    }
    return next;
  };
  // HF generate stops once every row has emitted EOS; so does this (rows are then shorter).
  auto all_finished = [&] { return std::all_of(finished.begin(), finished.end(), [](bool f) { return f; }); };
  if (opt.max_new_tokens <= 0) return out;
  if (opt.use_cache) {
    auto [logits, state] = arch.prefill(in);
    for (int i = 0; i < opt.max_new_tokens; ++i) {
      const std::vector<int64_t> next = step(logits, i);
      if (i + 1 < opt.max_new_tokens && !all_finished()) logits = arch.decode(*state, next);
      else break;
    }
  } else {
    Inputs cur = in;
    for (int i = 0; i < opt.max_new_tokens; ++i) {
      const std::vector<int64_t> next = step(arch.forward(cur).logits, i);
      if (i + 1 < opt.max_new_tokens && !all_finished()) cur = arch.append_tokens(cur, next);
      else break;
    }
  }
  return out;
}

std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, int max_new_tokens,
                                                  bool use_cache) {
  GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  opt.use_cache = use_cache;
  return greedy_generate(arch, in, opt);
}

namespace {

bool type_fits(const nlohmann::json& slot, const nlohmann::json& v) {
  if (slot.is_number_float()) return v.is_number();
  if (slot.is_number_integer()) {
    if (v.is_number_integer()) return true;
    if (!v.is_array() || v.empty()) return false;
    return std::all_of(v.begin(), v.end(), [](const nlohmann::json& e) { return e.is_number_integer(); });
  }
  if (slot.is_array() && v.is_number()) return true;
  return slot.type() == v.type();
}

void list_keys(const nlohmann::json& j, const std::string& prefix, std::vector<std::string>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_object()) {
      list_keys(it.value(), prefix + it.key() + ".", out);
    } else {
      out.push_back(prefix + it.key());
    }
  }
}

}  // namespace

nlohmann::json apply_family_keys(nlohmann::json config, const nlohmann::json& keys, std::string_view family) {
  if (keys.is_null()) return config;
  VLM_CHECK(keys.is_object(), "family keys must be a table");
  for (auto it = keys.begin(); it != keys.end(); ++it) {
    const std::string& key = it.key();
    const std::string shown = key.size() > 200 ? key.substr(0, 200) + "..." : key;
    nlohmann::json* slot = nullptr;
    if (key.find('.') != std::string::npos) {
      // A dotted path through the sub-configs; one that is no valid JSON pointer (a bad '~' escape, an
      // array index past 2^64) names nothing.
      std::string ptr = "/" + key;
      std::replace(ptr.begin(), ptr.end(), '.', '/');
      try {
        const nlohmann::json::json_pointer jp(ptr);
        if (config.contains(jp)) slot = &config[jp];
      } catch (const nlohmann::json::exception&) {
        slot = nullptr;
      }
    } else if (config.contains(key) && !config[key].is_object()) {
      slot = &config[key];
    } else {
      for (auto sub = config.begin(); sub != config.end(); ++sub) {
        if (!sub.value().is_object() || !sub.value().contains(key)) continue;
        if (slot != nullptr) {
          std::ostringstream os;
          os << family << ": \"" << shown << "\" is ambiguous (in several sub-configs); write it as a dotted path";
          throw ConfigError(os.str());
        }
        slot = &sub.value()[key];
      }
    }
    if (slot == nullptr || slot->is_object()) {
      std::vector<std::string> known;
      list_keys(config, "", known);
      std::ostringstream os;
      os << family << ": unknown key \"" << shown << "\"; the family's config keys are:";
      for (const std::string& k : known) os << ' ' << k;
      std::vector<std::string> names = known;  // a dotted path, or its last part (a key found once)
      for (const std::string& k : known) names.push_back(k.substr(k.rfind('.') + 1));
      os << did_you_mean(key, names);
      throw ConfigError(os.str());
    }
    if (!type_fits(*slot, it.value())) {
      std::ostringstream os;
      os << family << ": " << shown << ": expected a value like " << io::short_dump(*slot) << ", got "
         << io::short_dump(it.value());
      throw ConfigError(os.str());
    }
    *slot = it.value();
  }
  return config;
}

std::string component_of(const Architecture& arch, const std::string& param_name) {
  for (const auto& [prefix, component] : arch.component_prefixes())
    if (param_name.rfind(prefix, 0) == 0) return component;
  return "lm";
}

ModelSizes::Vision resolved_vision(const ModelSizes& sizes) {
  ModelSizes::Vision v = sizes.vision;
  if (v.intermediate_size == 0) v.intermediate_size = 4 * v.hidden_size;
  return v;
}

ModelSizes::Text resolved_text(const ModelSizes& sizes) {
  ModelSizes::Text t = sizes.text;
  if (t.num_key_value_heads == 0) t.num_key_value_heads = t.num_attention_heads;
  if (t.intermediate_size == 0) t.intermediate_size = 4 * t.hidden_size;
  return t;
}

}  // namespace vlm
