// The one table of families. Adding a family: a folder, one include and one row here.
#include "architectures/registry.h"

#include <array>
#include <sstream>

#include "lib/core/suggest.h"
#include "architectures/flamingo/flamingo.h"
#include "architectures/fuyu/fuyu.h"
#include "architectures/llava/llava.h"
#include "architectures/qwen2vl/qwen2vl.h"

namespace vlm {

namespace {
constexpr std::array kFamilies = {
    FamilyEntry{"llava", "llava", "LlavaForConditionalGeneration", &llava::make, &llava::make_processor, &llava::build_config, &llava::parts},
    FamilyEntry{"flamingo", "idefics", "IdeficsForVisionText2Text", &flamingo::make, &flamingo::make_processor, &flamingo::build_config, &flamingo::parts},
    FamilyEntry{"fuyu", "fuyu", "FuyuForCausalLM", &fuyu::make, &fuyu::make_processor, &fuyu::build_config, &fuyu::parts},
    FamilyEntry{"qwen2vl", "qwen2_vl", "Qwen2VLForConditionalGeneration", &qwen2vl::make, &qwen2vl::make_processor, &qwen2vl::build_config, &qwen2vl::parts},
};
}  // namespace

std::span<const FamilyEntry> families() { return kFamilies; }

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

}  // namespace vlm
