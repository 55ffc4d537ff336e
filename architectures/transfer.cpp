#include "architectures/transfer.h"

#include <fnmatch.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "architectures/pretrained.h"

namespace vlm {

bool is_component(const std::string& selector) {
  return selector == "vision" || selector == "connector" || selector == "lm";
}

std::vector<std::string> select_parameters(Architecture& arch, const std::string& selector) {
  std::vector<std::string> out;
  const bool component = is_component(selector);
  for (const auto& [name, t] : named_parameters(arch))
    if (component ? component_of(arch, name) == selector : fnmatch(selector.c_str(), name.c_str(), 0) == 0)
      out.push_back(name);
  return out;
}

std::string shared_name(const Architecture& arch, const std::string& name) {
  std::size_t best = 0;
  std::string out = name;
  for (const auto& [prefix, shared] : arch.shared_modules())
    if (name.rfind(prefix, 0) == 0 && prefix.size() > best) {
      best = prefix.size();
      out = shared + name.substr(prefix.size());
    }
  return out;
}

InitResult init_from(Architecture& target, const std::string& selector, const std::string& source_dir,
                     const std::string& what) {
  if (!std::filesystem::is_regular_file(std::filesystem::path(source_dir) / "model.safetensors") ||
      !std::filesystem::is_regular_file(std::filesystem::path(source_dir) / "config.json"))
    throw ConfigError(what + ": " + source_dir + " is not a kept model (a folder with config.json and model.safetensors)");
  std::unique_ptr<Architecture> source;
  try {
    source = load_pretrained(source_dir);
  } catch (const std::exception& e) {
    throw ConfigError(what + ": cannot load " + source_dir + ": " + e.what());
  }
  InitResult r;
  r.source_family = std::string(source->family());
  // The same weights compute the same tower only with the same activation and norm epsilon (CLIP's
  // quick_gelu vs IDEFICS's default gelu): refused rather than silently giving other outputs.
  if (selector == "vision") {
    const nlohmann::json& a = target.config().json();
    const nlohmann::json& b = source->config().json();
    if (a.contains("vision_config") && b.contains("vision_config"))
      for (const char* key : {"hidden_act", "layer_norm_eps"}) {
        const nlohmann::json& x = a["vision_config"].value(key, nlohmann::json());
        const nlohmann::json& y = b["vision_config"].value(key, nlohmann::json());
        if (!x.is_null() && !y.is_null() && x != y)
          throw ConfigError(what + ": the towers differ in vision_config." + key + ": " + x.dump() + " in " +
                            std::string(target.family()) + ", " + y.dump() + " in " + source_dir + " (" +
                            r.source_family + "); the same weights would compute another tower (set the variant's \"vision_config." +
                            key + "\" = " + y.dump() + ")");
      }
  }
  std::map<std::string, Tensor> theirs;
  for (auto& [name, t] : named_parameters(*source)) theirs.emplace(shared_name(*source, name), t);
  std::vector<std::pair<Tensor, Tensor>> copies;  // (ours, theirs): checked first, copied after
  for (auto& [name, t] : named_parameters(target)) {
    const bool picked = is_component(selector) ? component_of(target, name) == selector
                                               : fnmatch(selector.c_str(), name.c_str(), 0) == 0;
    if (!picked) continue;
    const std::string shared = shared_name(target, name);
    const auto it = theirs.find(shared);
    if (it == theirs.end())
      throw ConfigError(what + ": " + std::string(target.family()) + "'s parameter " + name + " has no counterpart in " +
                        source_dir + " (a " + r.source_family + " model; looked for " + shared + ")");
    if (it->second.shape() != t.shape())
      throw ConfigError(what + ": " + std::string(target.family()) + "'s parameter " + name + " is " +
                        shape_str(t.shape()) + " but its counterpart in " + source_dir + " (" + r.source_family +
                        ") is " + shape_str(it->second.shape()) + "; the two models' sizes differ");
    copies.emplace_back(t, it->second);
    r.names.push_back(name);
  }
  if (copies.empty())
    throw ConfigError(what + ": \"" + selector + "\" picks no parameter of " + std::string(target.family()));
  for (auto& [ours, src] : copies) {
    std::copy(src.data(), src.data() + src.numel(), ours.data());
    r.values += ours.numel();
  }
  return r;
}

}  // namespace vlm
