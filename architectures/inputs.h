// Model inputs by HF processor name (input_ids, attention_mask, pixel_values, image_grid_thw, ...),
// held as typed values: integer tensors as int64 values, float tensors as float values, each with
// its shape. The names and layouts are the HF processors' (tests/parity/README.md). Bytes appear
// only at the file boundary: from_safetensors() reads a fixture's tensors, to_safetensors() writes
// them out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lib/core/tensor.h"
#include "lib/io/safetensors.h"

namespace vlm {

class Inputs {
 public:
  Inputs() = default;
  // Every tensor of the file: integer and BOOL dtypes as int64, F32/F16/BF16/F64 as float.
  static Inputs from_safetensors(const io::Safetensors& st);
  // Integer tensors as I64, float tensors as F32 (what the processors make).
  io::Safetensors to_safetensors() const;

  bool has(const std::string& name) const { return ints_.count(name) > 0 || floats_.count(name) > 0; }
  Shape shape(const std::string& name) const;
  std::vector<int64_t> ints(const std::string& name) const;  // an integer tensor's values
  // A float tensor as a new Tensor (its buffer counted, like any tensor the forward makes, under the
  // caller's memory category: the stored values are the batch's, not the model's).
  Tensor floats(const std::string& name) const;
  void set_ints(const std::string& name, const Shape& shape, std::vector<int64_t> values);
  // A processor hands its values over (moved: no copy); a tensor is copied.
  void set_floats(const std::string& name, const Shape& shape, std::vector<float> values);
  void set_floats(const std::string& name, const Tensor& t);
  void erase(const std::string& name);
  std::vector<std::string> names() const;  // sorted

 private:
  template <typename T>
  struct Typed {
    Shape shape;
    std::vector<T> values;
  };
  std::map<std::string, Typed<int64_t>> ints_;
  std::map<std::string, Typed<float>> floats_;
};

}  // namespace vlm
