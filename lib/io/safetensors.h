// safetensors read/write (https://github.com/huggingface/safetensors), self-contained: no
// dependency on the tensor class. Reading validates the file the way the reference Rust crate
// does (safetensors/src/tensor.rs: read_metadata + Metadata::validate), plus a few stricter
// checks noted in safetensors.cpp; headers parse in time linear in their size. Every error is a
// SafetensorsError whose message starts with the file (or source) name and, where there is one,
// the tensor name (cut at 200 characters).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "lib/core/check.h"

namespace vlm::io {

// A vlm::Error (not a ConfigError): callers that must exit 2 on a bad file catch it by name.
class SafetensorsError : public vlm::Error {
 public:
  using vlm::Error::Error;
};

// The crate's F8/F6/F4 types are rejected with "not supported"; everything else is here.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

std::string_view dtype_name(DType dtype);  // "F32", "BF16", ... as written in the header
std::size_t dtype_size(DType dtype);       // bytes per element
std::optional<DType> parse_dtype(std::string_view name);

// Exact IEEE conversions (subnormals, signed zeros, inf and NaN payloads preserved).
float f16_to_f32(std::uint16_t bits);
float bf16_to_f32(std::uint16_t bits);

// One tensor as stored: little-endian, C order. A 0-d scalar has shape {} and one element.
struct RawTensor {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;

  // Product of shape (1 for a scalar); throws SafetensorsError on a negative entry or overflow.
  std::int64_t numel() const;
};

struct Safetensors {
  std::map<std::string, RawTensor> tensors;     // by name
  std::map<std::string, std::string> metadata;  // "__metadata__"; empty if absent
  std::string source;                           // file path (or source name), for errors

  bool contains(const std::string& name) const;
  const RawTensor& at(const std::string& name) const;  // throws naming tensor and source

  // Typed copies of a tensor's elements; throw naming the tensor if the dtype does not fit.
  std::vector<float> to_f32(const std::string& name) const;         // F32, F64, F16, BF16
  std::vector<double> to_f64(const std::string& name) const;        // F32, F64, F16, BF16
  std::vector<std::int64_t> to_i64(const std::string& name) const;  // any integer or BOOL
};

// Largest header the crate accepts (MAX_HEADER_SIZE).
inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;

Safetensors read_safetensors(const std::string& path);
Safetensors parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& source_name);

// Writes the crate's layout: header with "__metadata__" first (omitted when empty), padded with
// spaces to a multiple of 8 bytes, data ordered by dtype alignment descending then name. Goes
// through a temp file in the same directory renamed over `path`, so readers never see a partial
// file. Throws SafetensorsError naming the path (and tensor) on any failure.
void write_safetensors(const std::string& path, const std::map<std::string, RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The same bytes write_safetensors would put in the file.
std::vector<std::uint8_t> serialize_safetensors(
    const std::map<std::string, RawTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Builders for writing; throw SafetensorsError unless values.size() == product of shape.
RawTensor raw_f32(std::vector<std::int64_t> shape, std::span<const float> values);
RawTensor raw_f64(std::vector<std::int64_t> shape, std::span<const double> values);
RawTensor raw_i64(std::vector<std::int64_t> shape, std::span<const std::int64_t> values);
RawTensor raw_i32(std::vector<std::int64_t> shape, std::span<const std::int32_t> values);
RawTensor raw_bool(std::vector<std::int64_t> shape, const std::vector<bool>& values);

}  // namespace vlm::io
