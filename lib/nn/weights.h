// Module parameters <-> safetensors, by HF state-dict name (the names the module visitor yields). It lives
// in lib/nn because it walks modules (lib/io knows files, not modules: the two do not include each
// other any more); its functions keep the io:: namespace of the file I/O they are.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "lib/core/tensor.h"
#include "lib/io/safetensors.h"
#include "lib/nn/modules.h"

namespace vlm::io {

// Every parameter of `m` (under `prefix`) as F32 raw tensors, by name.
std::map<std::string, RawTensor> module_state(Module<float>& m, const std::string& prefix = "");
void save_module(const std::string& path, Module<float>& m, const std::string& prefix = "",
                 const std::map<std::string, std::string>& metadata = {});

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> unexpected;  // in the file, not in the module
};

// Copies the file's tensors into the module's parameters (converting F16/BF16/F64 to F32). A
// parameter missing from the file or of another shape is an error naming the tensor and the file;
// tensors the module does not have are listed in the report (an error when `strict`).
LoadReport load_module(const Safetensors& st, Module<float>& m, const std::string& prefix = "",
                       bool strict = true);
LoadReport load_module(const std::string& path, Module<float>& m, const std::string& prefix = "",
                       bool strict = true);

}  // namespace vlm::io
