#include "architectures/model_sizes.h"

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "lib/core/suggest.h"

namespace vlm {

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
