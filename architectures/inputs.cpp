#include "architectures/inputs.h"

#include <algorithm>

#include "lib/core/check.h"
#include "lib/core/parallel.h"

namespace vlm {

namespace {

bool is_float(io::DType d) {
  return d == io::DType::F64 || d == io::DType::F32 || d == io::DType::F16 || d == io::DType::BF16;
}

}  // namespace

Inputs Inputs::from_safetensors(const io::Safetensors& st) {
  Inputs in;
  for (const auto& [name, raw] : st.tensors) {
    if (is_float(raw.dtype)) in.floats_.emplace(name, Typed<float>{raw.shape, st.to_f32(name)});
    else in.ints_.emplace(name, Typed<int64_t>{raw.shape, st.to_i64(name)});
  }
  return in;
}

io::Safetensors Inputs::to_safetensors() const {
  io::Safetensors st;
  st.source = "inputs";
  for (const auto& [name, t] : ints_) st.tensors.emplace(name, io::raw_i64(t.shape, t.values));
  for (const auto& [name, t] : floats_) st.tensors.emplace(name, io::raw_f32(t.shape, t.values));
  return st;
}

Shape Inputs::shape(const std::string& name) const {
  if (auto it = ints_.find(name); it != ints_.end()) return it->second.shape;
  auto it = floats_.find(name);
  VLM_CHECK(it != floats_.end(), "model input \"" << name << "\" is missing");
  return it->second.shape;
}

std::vector<int64_t> Inputs::ints(const std::string& name) const {
  auto it = ints_.find(name);
  VLM_CHECK(it != ints_.end(), "model input \"" << name << "\" is "
                                                << (floats_.count(name) ? "a float tensor, not integers" : "missing"));
  return it->second.values;
}

Tensor Inputs::floats(const std::string& name) const {
  auto it = floats_.find(name);
  VLM_CHECK(it != floats_.end(), "model input \"" << name << "\" is "
                                                  << (ints_.count(name) ? "an integer tensor, not floats" : "missing"));
  const Typed<float>& t = it->second;
  // One copy into the tensor, split over the threads: pixel values are megabytes per training batch.
  Tensor out = Tensor::empty(t.shape);
  const float* src = t.values.data();
  float* dst = out.data();
  parallel_for(static_cast<int64_t>(t.values.size()), int64_t{1} << 16, [&](int64_t b, int64_t e) {
    std::copy(src + b, src + e, dst + b);
  });
  return out;
}

namespace {

void check_count(const std::string& name, const Shape& shape, std::size_t n_values) {
  int64_t n = 1;
  for (const int64_t d : shape) {
    VLM_CHECK(d >= 0, "model input \"" << name << "\": shape " << shape_str(shape) << " has a negative size");
    n *= d;
  }
  VLM_CHECK(n == static_cast<int64_t>(n_values),
            "model input \"" << name << "\": " << n_values << " values for shape " << shape_str(shape));
}

}  // namespace

void Inputs::set_ints(const std::string& name, const Shape& shape, std::vector<int64_t> values) {
  check_count(name, shape, values.size());
  floats_.erase(name);
  ints_[name] = Typed<int64_t>{shape, std::move(values)};
}

void Inputs::set_floats(const std::string& name, const Shape& shape, std::vector<float> values) {
  check_count(name, shape, values.size());
  ints_.erase(name);
  floats_[name] = Typed<float>{shape, std::move(values)};
}

void Inputs::set_floats(const std::string& name, const Tensor& t) { set_floats(name, t.shape(), t.to_vector()); }

void Inputs::erase(const std::string& name) {
  ints_.erase(name);
  floats_.erase(name);
}

std::vector<std::string> Inputs::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : ints_) out.push_back(k);
  for (const auto& [k, v] : floats_) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace vlm
