// Which parameters a stage trains, freezes or takes from another model, by name: the selectors of
// experiments' `train`, `freeze`, `lr_scale` and `init_from` keys, and the copy init_from makes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "architectures/architecture.h"

namespace vlm {

// "vision", "connector" or "lm": a component (component_of); anything else is a glob over HF names.
bool is_component(const std::string& selector);
// The parameter names (named_parameters order) `selector` picks: a component's (none when the family
// has no such part: fuyu has no vision tower), or those a glob matches (fnmatch; possibly none).
std::vector<std::string> select_parameters(Architecture& arch, const std::string& selector);

// A parameter's family-independent name (Architecture::shared_modules): "clip_vision.encoder...".
std::string shared_name(const Architecture& arch, const std::string& name);

struct InitResult {
  std::string source_family;
  std::vector<std::string> names;  // target parameters set
  int64_t values = 0;
};
// Sets the parameters of `target` that `selector` picks to those of the model kept at `source_dir`
// (config.json + model.safetensors, as save_pretrained writes them) with the same shared name. Nothing
// is changed unless every one has its counterpart of the same shape; otherwise a ConfigError naming
// the parameter (and both shapes). `what` prefixes messages (e.g. "stage[1].init_from.vision").
InitResult init_from(Architecture& target, const std::string& selector, const std::string& source_dir,
                     const std::string& what);

}  // namespace vlm
