#include "architectures/pretrained.h"

#include <filesystem>
#include <set>

#include "architectures/registry.h"
#include "lib/core/random.h"
#include "lib/io/durable.h"
#include "lib/nn/weights.h"

namespace vlm {

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

}  // namespace vlm
