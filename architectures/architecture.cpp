#include "architectures/architecture.h"

namespace vlm {

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

std::string component_of(const Architecture& arch, const std::string& param_name) {
  for (const auto& [prefix, component] : arch.component_prefixes())
    if (param_name.rfind(prefix, 0) == 0) return component;
  return "lm";
}

}  // namespace vlm
