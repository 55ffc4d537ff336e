// The task table and make_task's validation of a config's params against each task's ParamSpecs.
#include <cmath>
#include <sstream>

#include "lib/data/task.h"
#include "lib/data/task_common.h"
#include "lib/core/suggest.h"

namespace vlm::data {

namespace {

struct Entry {
  TaskInfo (*info)();
  std::unique_ptr<Task> (*make)(const Params&);
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> kEntries = {
      {detail::sort_of_clevr_info, detail::make_sort_of_clevr},
      {detail::counting_info, detail::make_counting},
      {detail::ocr_info, detail::make_ocr},
      {detail::multi_image_info, detail::make_multi_image},
  };
  return kEntries;
}

const char* type_name(const ParamValue& v) {
  switch (v.index()) {
    case 0: return "an integer";
    case 1: return "a float";
    case 2: return "a bool";
    default: return "a string";
  }
}

std::string value_str(const ParamValue& v) {
  std::ostringstream os;
  std::visit([&](const auto& x) {
    if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>)
      os << '"' << x << '"';
    else if constexpr (std::is_same_v<std::decay_t<decltype(x)>, bool>)
      os << (x ? "true" : "false");
    else
      os << x;
  }, v);
  return os.str();
}

// The value `spec` accepts for `v`, or throws naming the task, the key and what was expected. An
// integer is accepted where a float is expected (TOML writes 8 for 8.0); nothing else converts.
ParamValue checked(const std::string& task, const ParamSpec& spec, const ParamValue& v) {
  ParamValue out = v;
  if (std::holds_alternative<double>(spec.default_value) && std::holds_alternative<int64_t>(v))
    out = static_cast<double>(std::get<int64_t>(v));
  VLM_TASK_CONFIG_CHECK(out.index() == spec.default_value.index(),
            "task " << task << ": param '" << spec.key << "' must be " << type_name(spec.default_value)
                    << ", got " << type_name(v) << " " << value_str(v));
  if (std::holds_alternative<int64_t>(out) || std::holds_alternative<double>(out)) {
    const double x = std::holds_alternative<int64_t>(out) ? static_cast<double>(std::get<int64_t>(out))
                                                          : std::get<double>(out);
    VLM_TASK_CONFIG_CHECK(std::isfinite(x) && x >= spec.min && x <= spec.max,
              "task " << task << ": param '" << spec.key << "' = " << value_str(v) << " is out of range ["
                      << spec.min << ", " << spec.max << "]");
  }
  if (std::holds_alternative<std::string>(out) && !spec.choices.empty()) {
    const std::string& s = std::get<std::string>(out);
    bool ok = false;
    std::ostringstream known;
    for (const std::string& c : spec.choices) {
      ok = ok || c == s;
      known << (known.tellp() > 0 ? ", " : "") << c;
    }
    VLM_TASK_CONFIG_CHECK(ok, "task " << task << ": param '" << spec.key << "' = \"" << s
                                      << "\" is not one of: " << known.str());
  }
  return out;
}

}  // namespace

std::vector<TaskInfo> task_infos() {
  std::vector<TaskInfo> infos;
  for (const Entry& e : entries()) {
    infos.push_back(e.info());
    infos.back().params.push_back(detail::mode_param());
  }
  return infos;
}

std::unique_ptr<Task> make_task(const std::string& name, const Params& params) {
  std::ostringstream known;
  std::vector<std::string> names;
  for (const Entry& e : entries()) {
    TaskInfo info = e.info();
    info.params.push_back(detail::mode_param());
    known << (known.tellp() > 0 ? ", " : "") << info.name;
    names.push_back(info.name);
    if (info.name != name) continue;
    Params resolved;
    std::ostringstream keys;
    std::vector<std::string> key_names;
    for (const ParamSpec& spec : info.params) {
      resolved[spec.key] = spec.default_value;
      keys << (keys.tellp() > 0 ? ", " : "") << spec.key;
      key_names.push_back(spec.key);
    }
    for (const auto& [key, value] : params) {
      const ParamSpec* spec = nullptr;
      for (const ParamSpec& sp : info.params)
        if (sp.key == key) spec = &sp;
      VLM_TASK_CONFIG_CHECK(spec != nullptr,
                            "task " << name << ": unknown param '" << key << "' (known: " << keys.str() << ")"
                                    << did_you_mean(key, key_names));
      resolved[key] = checked(name, *spec, value);
    }
    const std::string mode = std::get<std::string>(resolved.at("mode"));
    resolved.erase("mode");  // the generators know only their questions; with_mode wraps them
    return detail::with_mode(e.make(resolved), mode);
  }
  VLM_TASK_CONFIG_CHECK(false, "unknown task '" << name << "' (known: " << known.str() << ")" << did_you_mean(name, names));
  return nullptr;
}

}  // namespace vlm::data
