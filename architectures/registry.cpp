// The one table of families. Adding a family: a folder, one include and one row here.
#include <array>

#include "architectures/architecture.h"
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

}  // namespace vlm
