#include "lib/nn/weights.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace vlm::io {

std::map<std::string, RawTensor> module_state(Module<float>& m, const std::string& prefix) {
  std::map<std::string, RawTensor> out;
  for (auto& [name, t] : named_parameters(m, prefix)) {
    VLM_CHECK(!out.count(name), "two parameters are both named \"" << name << "\"");
    out.emplace(name, raw_f32(t.shape(), std::span<const float>(t.data(), static_cast<std::size_t>(t.numel()))));
  }
  return out;
}

void save_module(const std::string& path, Module<float>& m, const std::string& prefix,
                 const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, module_state(m, prefix), metadata);
}

LoadReport load_module(const Safetensors& st, Module<float>& m, const std::string& prefix, bool strict) {
  LoadReport rep;
  std::set<std::string> wanted;
  for (auto& [name, t] : named_parameters(m, prefix)) {
    wanted.insert(name);
    VLM_CHECK(st.contains(name), st.source << ": missing tensor \"" << name << "\" (expected shape "
                                           << shape_str(t.shape()) << ")");
    const RawTensor& raw = st.at(name);
    VLM_CHECK(raw.shape == t.shape(), st.source << ": tensor \"" << name << "\" has shape " << shape_str(raw.shape)
                                                << ", the model expects " << shape_str(t.shape()));
    const std::vector<float> values = st.to_f32(name);
    std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
    rep.loaded.push_back(name);
  }
  for (const auto& [name, raw] : st.tensors)
    if (!wanted.count(name)) rep.unexpected.push_back(name);
  if (strict && !rep.unexpected.empty()) {
    std::string list;
    for (std::size_t i = 0; i < std::min<std::size_t>(rep.unexpected.size(), 5); ++i)
      list += (i ? ", \"" : "\"") + rep.unexpected[i] + "\"";
    VLM_CHECK(false, st.source << ": " << rep.unexpected.size() << " tensor(s) the model does not have: " << list
                               << (rep.unexpected.size() > 5 ? ", ..." : ""));
  }
  return rep;
}

LoadReport load_module(const std::string& path, Module<float>& m, const std::string& prefix, bool strict) {
  return load_module(read_safetensors(path), m, prefix, strict);
}

}  // namespace vlm::io
