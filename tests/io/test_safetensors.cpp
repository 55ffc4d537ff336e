#include <array>
#include <bit>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "lib/io/safetensors.h"

namespace fs = std::filesystem;
using Catch::Contains;
using vlm::io::DType;
using vlm::io::RawTensor;
using vlm::io::Safetensors;
using vlm::io::SafetensorsError;

namespace {

// A scratch directory removed when the test ends.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("vlm_st_test_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::size_t entry_count() const {
    return static_cast<std::size_t>(
        std::distance(fs::directory_iterator(path_), fs::directory_iterator()));
  }

 private:
  fs::path path_;
};

// 8-byte length (the header's own unless overridden) + header text + data_len bytes.
std::vector<std::uint8_t> make_file(const std::string& header, std::size_t data_len,
                                    std::optional<std::uint64_t> n = std::nullopt) {
  // Sized up front: vector::insert after a short vector trips a GCC 12 -O3 -Warray-bounds bug.
  std::vector<std::uint8_t> out(8 + header.size() + data_len);
  const std::uint64_t len = n.value_or(header.size());
  std::memcpy(out.data(), &len, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_len; ++i) {
    out[8 + header.size() + i] = static_cast<std::uint8_t>(i);
  }
  return out;
}

Safetensors parse(const std::vector<std::uint8_t>& bytes) {
  return vlm::io::parse_safetensors(bytes, "mem.safetensors");
}

Safetensors parse_header(const std::string& header, std::size_t data_len) {
  return parse(make_file(header, data_len));
}

std::vector<std::uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

RawTensor raw_u16(DType dtype, std::vector<std::int64_t> shape, std::vector<std::uint16_t> bits) {
  RawTensor t{dtype, std::move(shape), std::vector<std::uint8_t>(bits.size() * 2)};
  std::memcpy(t.bytes.data(), bits.data(), t.bytes.size());
  return t;
}

// Bitwise equality, so NaN and -0.0 compare as what they are.
bool same_bits(float a, float b) {
  return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

// The committed parity fixtures (tests/data/parity; meson passes VLM_TEST_DATA).
std::string shared_parity_dir() {
  const char* env = std::getenv("VLM_TEST_DATA");
  return (env != nullptr ? std::string(env) : std::string("tests/data")) + "/parity";
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing agree", "[io][safetensors]") {
  CHECK(vlm::io::dtype_name(DType::BF16) == "BF16");
  CHECK(vlm::io::dtype_name(DType::BOOL) == "BOOL");
  CHECK(vlm::io::dtype_size(DType::F64) == 8);
  CHECK(vlm::io::dtype_size(DType::F16) == 2);
  CHECK(vlm::io::dtype_size(DType::BOOL) == 1);
  for (DType d :
       {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
        DType::I8, DType::U64, DType::U32, DType::U16, DType::U8, DType::BOOL}) {
    CHECK(vlm::io::parse_dtype(vlm::io::dtype_name(d)) == d);
  }
  CHECK_FALSE(vlm::io::parse_dtype("f32").has_value());
  CHECK_FALSE(vlm::io::parse_dtype("F8_E4M3").has_value());
}

TEST_CASE("RawTensor::numel handles scalars, empty dims and bad shapes", "[io][safetensors]") {
  CHECK(RawTensor{DType::F32, {}, {}}.numel() == 1);
  CHECK(RawTensor{DType::F32, {0, 7}, {}}.numel() == 0);
  CHECK(RawTensor{DType::F32, {2, 3, 4}, {}}.numel() == 24);
  CHECK_THROWS_AS((RawTensor{DType::F32, {2, -1}, {}}.numel()), SafetensorsError);
  CHECK_THROWS_WITH((RawTensor{DType::F32, {1LL << 40, 1LL << 40}, {}}.numel()),
                    Contains("overflows"));
}

TEST_CASE("F16 and BF16 decode exactly", "[io][safetensors]") {
  using vlm::io::bf16_to_f32;
  using vlm::io::f16_to_f32;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  CHECK(f16_to_f32(0x3C00) == 1.0f);
  CHECK(f16_to_f32(0xC100) == -2.5f);
  CHECK(f16_to_f32(0x7BFF) == 65504.0f);                  // largest finite
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));     // smallest subnormal
  CHECK(f16_to_f32(0x03FF) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));     // smallest normal
  CHECK(same_bits(f16_to_f32(0x8000), -0.0f));
  CHECK(f16_to_f32(0x7C00) == kInf);
  CHECK(f16_to_f32(0xFC00) == -kInf);
  CHECK(std::isnan(f16_to_f32(0x7E00)));
  CHECK(std::isnan(f16_to_f32(0x7C01)));  // signalling NaN stays NaN, not inf

  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC020) == -2.5f);
  CHECK(bf16_to_f32(0x477F) == 65280.0f);
  CHECK(bf16_to_f32(0x7F7F) == std::bit_cast<float>(0x7F7F0000u));  // largest finite
  CHECK(bf16_to_f32(0x0001) == std::ldexp(1.0f, -133));             // smallest subnormal
  CHECK(bf16_to_f32(0x7F80) == kInf);
  CHECK(bf16_to_f32(0xFF80) == -kInf);
  CHECK(std::isnan(bf16_to_f32(0x7FC0)));
}

TEST_CASE("round trip of several dtypes through a file, with metadata", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("round.safetensors");
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  const std::vector<double> f64 = {3.141592653589793, -1e300};
  const std::vector<std::int64_t> scalar = {-9'000'000'000'000LL};
  const std::vector<std::int32_t> i32 = {-7, 0, 2147483647};
  std::map<std::string, RawTensor> in;
  in["weights.f32"] = vlm::io::raw_f32({2, 3}, f32);
  in["weights.f64"] = vlm::io::raw_f64({2}, f64);
  in["step"] = vlm::io::raw_i64({}, scalar);  // 0-d scalar
  in["ids"] = vlm::io::raw_i32({3}, i32);
  in["mask"] = vlm::io::raw_bool({2, 2}, {true, false, false, true});
  in["half"] = raw_u16(DType::F16, {3}, {0x3C00, 0xC100, 0x7BFF});
  in["brain"] = raw_u16(DType::BF16, {2}, {0x3F80, 0xC020});
  in["empty"] = vlm::io::raw_f32({0, 5}, std::span<const float>());
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\u00e9 \"q\""}};
  vlm::io::write_safetensors(path, in, meta);

  const Safetensors st = vlm::io::read_safetensors(path);
  CHECK(st.source == path);
  CHECK(st.metadata == meta);
  REQUIRE(st.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    INFO(name);
    REQUIRE(st.contains(name));
    CHECK(st.at(name).dtype == t.dtype);
    CHECK(st.at(name).shape == t.shape);
    CHECK(st.at(name).bytes == t.bytes);
  }
  CHECK(st.to_f32("weights.f32") == f32);
  CHECK(st.to_f64("weights.f64") == f64);
  CHECK(st.at("step").shape.empty());
  CHECK(st.to_i64("step") == scalar);
  CHECK(st.to_i64("ids") == std::vector<std::int64_t>{-7, 0, 2147483647});
  CHECK(st.to_i64("mask") == std::vector<std::int64_t>{1, 0, 0, 1});
  CHECK(st.to_f32("half") == std::vector<float>{1.0f, -2.5f, 65504.0f});
  CHECK(st.to_f64("brain") == std::vector<double>{1.0, -2.5});
  CHECK(st.at("empty").numel() == 0);
  CHECK(st.to_f32("empty").empty());

  // In memory gives the same bytes as the file, and parses back the same.
  const std::vector<std::uint8_t> mem = vlm::io::serialize_safetensors(in, meta);
  CHECK(mem == read_all(path));
  const Safetensors st2 = vlm::io::parse_safetensors(mem, "mem");
  CHECK(st2.at("weights.f32").bytes == in["weights.f32"].bytes);
  CHECK(st2.metadata == meta);
}

TEST_CASE("written layout matches the Rust crate byte for byte", "[io][safetensors]") {
  // Expected bytes are the crate's own tests (test_serialization, test_empty).
  const std::vector<float> v = {0, 1, 2, 3, 4, 5};
  const std::vector<std::uint8_t> one =
      vlm::io::serialize_safetensors({{"attn.0", vlm::io::raw_f32({1, 2, 3}, v)}});
  const std::vector<std::uint8_t> expect_one = {
      64, 0,  0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,
      34, 58, 123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,
      44, 34, 115, 104, 97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,
      44, 34, 100, 97,  116, 97,  95,  111, 102, 102, 115, 101, 116, 115, 34,  58,
      91, 48, 44,  50,  52,  93,  125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
      0,  0,  0,   64,  0,   0,   64,  64,  0,   0,   128, 64,  0,   0,   160, 64};
  CHECK(one == expect_one);

  const std::vector<std::uint8_t> empty = vlm::io::serialize_safetensors({}, {});
  CHECK(empty ==
        std::vector<std::uint8_t>{8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32});
  const std::vector<std::uint8_t> meta = vlm::io::serialize_safetensors({}, {{"framework", "pt"}});
  const std::string meta_text = "{\"__metadata__\":{\"framework\":\"pt\"}}     ";
  CHECK(meta == make_file(meta_text, 0));

  // Data ordered by dtype alignment descending, then name; header padded to 8.
  const std::vector<float> f = {1.0f};
  const std::vector<std::int64_t> i = {1};
  const std::vector<std::uint8_t> mixed =
      vlm::io::serialize_safetensors({{"a", vlm::io::raw_bool({3}, {true, true, false})},
                                      {"b", vlm::io::raw_f32({1}, f)},
                                      {"c", vlm::io::raw_i64({1}, i)},
                                      {"d", vlm::io::raw_f32({1}, f)}},
                                     {{"k", "v"}});
  const std::string text(mixed.begin() + 8, mixed.end());
  CHECK(text.rfind("{\"__metadata__\":{\"k\":\"v\"},\"c\":", 0) == 0);
  CHECK_THAT(text, Contains("\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}"));
  CHECK_THAT(text, Contains("\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}"));
  CHECK_THAT(text, Contains("\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}"));
  CHECK_THAT(text, Contains("\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[16,19]}"));
  std::uint64_t n = 0;
  std::memcpy(&n, mixed.data(), 8);
  CHECK((8 + n) % 8 == 0);
  CHECK(mixed.size() == 8 + n + 19);
}

TEST_CASE("reads the llava_tiny parity fixtures", "[io][safetensors][fixture]") {
  const std::string dir = shared_parity_dir() + "/llava_tiny";
  if (!fs::exists(dir + "/model.safetensors")) {
    WARN("skipped: no fixture at " << dir << " (set VLM_TEST_DATA)");
    return;
  }
  const Safetensors model = vlm::io::read_safetensors(dir + "/model.safetensors");
  CHECK(model.tensors.size() == 80);
  CHECK(model.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(model.at("language_model.lm_head.weight").shape == std::vector<std::int64_t>{99, 32});
  CHECK(model.at("vision_tower.embeddings.patch_embedding.weight").shape ==
        std::vector<std::int64_t>{32, 3, 3, 3});
  CHECK(model.at("vision_tower.embeddings.position_embedding.weight").shape ==
        std::vector<std::int64_t>{17, 32});
  const std::vector<float> patch = model.to_f32("vision_tower.embeddings.patch_embedding.weight");
  REQUIRE(patch.size() == 864);
  CHECK(patch[0] == -0.04340531677007675f);
  CHECK(patch[863] == -0.22514386475086212f);
  CHECK(model.to_f32("language_model.model.norm.weight")[1] == 1.0086801052093506f);

  const Safetensors io = vlm::io::read_safetensors(dir + "/io.safetensors");
  CHECK(io.metadata.at("family") == "llava");
  CHECK(io.metadata.at("transformers_version") == "5.17.0");
  // Stored I64 first, so header order differs from offset order: exercises the sort.
  CHECK(io.at("input_ids").dtype == DType::I64);
  CHECK(io.at("image_features").shape == std::vector<std::int64_t>{2, 16, 32});
  CHECK(io.at("logits").shape == std::vector<std::int64_t>{2, 25, 99});
  CHECK(io.at("pixel_values").shape == std::vector<std::int64_t>{2, 3, 12, 12});
  const std::vector<std::int64_t> ids = io.to_i64("input_ids");
  REQUIRE(ids.size() == 50);
  CHECK(ids[0] == 94);
  CHECK(ids[3] == 5);
  std::int64_t sum = 0;
  for (std::int64_t x : ids) sum += x;
  CHECK(sum == 1207);
  const std::vector<std::int64_t> mask = io.to_i64("attention_mask");
  CHECK(std::all_of(mask.begin(), mask.end(), [](std::int64_t x) { return x == 1; }));
  CHECK(io.to_f32("logits")[0] == -1.2039655447006226f);
}

TEST_CASE("lookups and conversions fail with the tensor and file named", "[io][safetensors]") {
  const std::vector<std::int64_t> i = {1, 2};
  const Safetensors st = vlm::io::parse_safetensors(
      vlm::io::serialize_safetensors({{"ids", vlm::io::raw_i64({2}, i)}}), "x.safetensors");
  CHECK_FALSE(st.contains("nope"));
  CHECK_THROWS_WITH(st.at("nope"), "x.safetensors: tensor \"nope\": not found");
  CHECK_THROWS_WITH(st.to_f32("ids"),
                    "x.safetensors: tensor \"ids\": is I64, not a floating-point dtype");
  CHECK_THROWS_WITH(st.to_f64("nope"), Contains("\"nope\": not found"));

  Safetensors bad;
  bad.source = "y";
  bad.tensors["f"] = RawTensor{DType::F32, {3}, std::vector<std::uint8_t>(8)};
  bad.tensors["g"] = RawTensor{DType::F32, {1}, std::vector<std::uint8_t>(4)};
  CHECK_THROWS_WITH(bad.to_f32("f"), "y: tensor \"f\": holds 8 bytes but F32 [3] needs 12");
  CHECK_THROWS_WITH(bad.to_i64("g"), "y: tensor \"g\": is F32, not an integer dtype");

  std::vector<std::uint8_t> big(8, 0xFF);
  bad.tensors["u"] = RawTensor{DType::U64, {1}, big};
  CHECK_THROWS_WITH(bad.to_i64("u"), Contains("does not fit in int64"));
}

TEST_CASE("valid edge cases parse", "[io][safetensors]") {
  CHECK(parse_header("{}", 0).tensors.empty());
  CHECK(parse_header("{}      ", 0).tensors.empty());  // space padding
  CHECK(parse_header("{\"__metadata__\":null}", 0).metadata.empty());
  // Zero-size tensors may sit at any offset on the tiling, including the end.
  const Safetensors st = parse_header(
      "{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"e\":{\"dtype\":\"U8\",\"shape\":[0,3],\"data_offsets\":[4,4]}}",
      4);
  CHECK(st.tensors.size() == 3);
  CHECK(st.at("a").bytes == std::vector<std::uint8_t>{0, 1, 2, 3});
  // Exactly the header-size limit is allowed by the limit check (and fails only on size).
  CHECK_THROWS_WITH(parse(make_file("{}", 0, 100'000'000)), Contains("runs past the end"));
}

TEST_CASE("truncated inputs are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(parse({1, 2, 3}),
                    "mem.safetensors: file is 3 bytes, too short for the 8-byte header length");
  CHECK_THROWS_WITH(parse({}), Contains("too short"));
  CHECK_THROWS_WITH(parse(make_file("{}", 0, 100)),
                    "mem.safetensors: header length 100 runs past the end of the file "
                    "(8 + 100 > 10 bytes)");
  // Data shorter than the offsets promise (e.g. a cut-off download).
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 8),
      "mem.safetensors: tensor \"w\": data_offsets [0, 12] run past the end of the data "
      "(8 bytes after the header)");
}

TEST_CASE("huge header lengths are rejected before allocating", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(parse(make_file("{}", 0, 1ULL << 63)),
                    "mem.safetensors: header length 9223372036854775808 exceeds the limit of "
                    "100000000 bytes");
  CHECK_THROWS_WITH(parse(make_file("{}", 0, 100'000'001)),
                    Contains("header length 100000001 exceeds the limit"));
  CHECK_THROWS_WITH(parse(make_file("{}", 0, ~0ULL)), Contains("exceeds the limit"));
}

TEST_CASE("bad offsets are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8),
      "mem.safetensors: tensor \"w\": data_offsets [8, 4] end before begin");
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],"
                   "\"data_offsets\":[18446744073709551612,18446744073709551615]}}",
                   4),
      Contains("tensor \"w\": data_offsets [18446744073709551612, 18446744073709551615] run "
               "past the end of the data"));
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4),
      Contains("tensor \"w\": data_offsets must be [begin, end]"));
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4),
      Contains("tensor \"w\": data_offsets must be [begin, end]"));
}

TEST_CASE("overlaps, gaps and trailing bytes are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                                 24),
                    "mem.safetensors: tensor \"b\": data_offsets [8, 24] overlap tensor \"a\" "
                    "[0, 16]");
  // Two tensors sharing the same bytes.
  CHECK_THROWS_WITH(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                 "\"b\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                                 16),
                    Contains("tensor \"b\": data_offsets [0, 16] overlap tensor \"a\""));
  CHECK_THROWS_WITH(
      parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[20,36]}}",
                   36),
      "mem.safetensors: tensor \"b\": data_offsets [20, 36] leave a gap after "
      "tensor \"a\" (ends at 16)");
  CHECK_THROWS_WITH(
      parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4,20]}}", 20),
      Contains("tensor \"a\": data_offsets [4, 20] leave a gap at the start of the data"));
  CHECK_THROWS_WITH(
      parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 20),
      "mem.safetensors: data after the header is 20 bytes but the tensors end at 16 "
      "(4 trailing bytes)");
  CHECK_THROWS_WITH(parse_header("{}", 3), Contains("(3 trailing bytes)"));
}

TEST_CASE("byte size must match dtype and shape", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(
      parse_header(
          "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,40]}}", 40),
      "mem.safetensors: tensor \"lm_head.weight\": data_offsets [0, 40] hold 40 bytes but "
      "F32 [3, 4] needs 48");
  CHECK_THROWS_WITH(
      parse_header("{\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4),
      Contains("tensor \"s\": data_offsets [0, 4] hold 4 bytes but BF16 [] needs 2"));
}

TEST_CASE("bad dtypes and shapes are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
      "mem.safetensors: tensor \"w\": unknown dtype \"F7\"");
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
      Contains("tensor \"w\": dtype \"F8_E4M3\" is not supported"));
  CHECK_THROWS_WITH(parse_header("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                    Contains("tensor \"w\": dtype must be a string"));
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}}", 4),
      "mem.safetensors: tensor \"w\": shape entry -3 is negative");
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4),
      Contains("tensor \"w\": shape entry must be a non-negative integer, got number"));
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4),
      Contains("tensor \"w\": shape must be an array"));
  // 2^32 * 2^32 overflows int64 (and u64) even though each entry fits.
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                   "\"data_offsets\":[0,4]}}",
                   4),
      "mem.safetensors: tensor \"w\": element count of F32 [4294967296, 4294967296] overflows");
  // Element count fits, byte count does not.
  CHECK_THROWS_WITH(parse_header("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                                 "\"data_offsets\":[0,4]}}",
                                 4),
                    Contains("tensor \"w\": byte size of F64 [4611686018427387904] overflows"));
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],"
                   "\"data_offsets\":[0,4]}}",
                   4),
      Contains("tensor \"w\": shape entry 18446744073709551615 does not fit in int64"));
}

TEST_CASE("malformed entries are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0),
                    "mem.safetensors: tensor \"w\": missing \"data_offsets\"");
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4),
      Contains("tensor \"w\": unexpected key \"x\""));
  CHECK_THROWS_WITH(parse_header("{\"w\":[1,2]}", 0),
                    Contains("tensor \"w\": entry must be an object"));
  CHECK_THROWS_WITH(parse_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                 "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                                 2),
                    "mem.safetensors: header has duplicate key \"w\"");
  CHECK_THROWS_WITH(
      parse_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}", 4),
      Contains("header nests deeper than a safetensors header can"));
}

TEST_CASE("bad JSON and bad metadata are rejected", "[io][safetensors][corrupt]") {
  CHECK_THROWS_WITH(parse_header("{\"w\": ", 0),
                    Contains("mem.safetensors: header is not valid JSON"));
  CHECK_THROWS_WITH(parse_header("", 0), Contains("mem.safetensors: header is not valid JSON"));
  CHECK_THROWS_WITH(parse_header("{} x", 0), Contains("header is not valid JSON"));
  CHECK_THROWS_WITH(parse_header("{\"\xff\":1}", 0),
                    "mem.safetensors: header is not valid UTF-8 (byte 2 of the header)");
  CHECK_THROWS_WITH(parse_header("{\"\xed\xa0\x80\":1}", 0),  // a UTF-16 surrogate
                    Contains("header is not valid UTF-8"));
  CHECK_THROWS_WITH(parse_header("[1,2]", 0),
                    "mem.safetensors: header must be a JSON object, got array");
  CHECK_THROWS_WITH(parse_header("\"str\"", 0), Contains("header must be a JSON object"));
  CHECK_THROWS_WITH(parse_header("{\"__metadata__\":{\"k\":1}}", 0),
                    "mem.safetensors: \"__metadata__\" value for key \"k\" must be a string, "
                    "got number");
  CHECK_THROWS_WITH(parse_header("{\"__metadata__\":[\"a\"]}", 0),
                    Contains("\"__metadata__\" must be an object of strings, got array"));
}

TEST_CASE("corrupt files on disk are rejected with the path named", "[io][safetensors][corrupt]") {
  TempDir dir;
  const std::vector<float> v = {1, 2, 3, 4};
  const std::string good = dir.file("good.safetensors");
  vlm::io::write_safetensors(good, {{"w", vlm::io::raw_f32({4}, v)}});
  std::vector<std::uint8_t> bytes = read_all(good);
  REQUIRE(bytes.size() > 4);

  const std::string cut = dir.file("cut.safetensors");
  write_all(cut, std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 4));
  CHECK_THROWS_WITH(vlm::io::read_safetensors(cut),
                    cut +
                        ": tensor \"w\": data_offsets [0, 16] run past the end of the data "
                        "(12 bytes after the header)");

  const std::string tiny = dir.file("tiny.safetensors");
  write_all(tiny, {1, 2, 3});
  CHECK_THROWS_WITH(vlm::io::read_safetensors(tiny), tiny +
                                                         ": file is 3 bytes, too short for "
                                                         "the 8-byte header length");

  const std::string huge = dir.file("huge.safetensors");
  write_all(huge, make_file("{}", 0, 1ULL << 63));
  CHECK_THROWS_WITH(vlm::io::read_safetensors(huge), Contains(huge + ": header length"));

  const std::string trailing = dir.file("trailing.safetensors");
  bytes.push_back(0);
  write_all(trailing, bytes);
  CHECK_THROWS_WITH(vlm::io::read_safetensors(trailing), Contains(trailing + ": data after"));

  const std::string missing = dir.file("missing.safetensors");
  CHECK_THROWS_WITH(vlm::io::read_safetensors(missing), missing + ": file not found");
  CHECK_THROWS_WITH(vlm::io::read_safetensors(dir.file("")), Contains("not a regular file"));
}

TEST_CASE("writing validates tensors and replaces files atomically", "[io][safetensors]") {
  TempDir dir;
  const std::string path = dir.file("out.safetensors");
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  vlm::io::write_safetensors(path, {{"w", vlm::io::raw_f32({2, 3}, v)}});
  const std::vector<std::uint8_t> first = read_all(path);

  // A bad tensor fails before anything is written, naming path and tensor.
  RawTensor short_bytes{DType::F32, {2, 3}, std::vector<std::uint8_t>(20)};
  CHECK_THROWS_WITH(vlm::io::write_safetensors(path, {{"bad", short_bytes}}),
                    path + ": tensor \"bad\": holds 20 bytes but F32 [2, 3] needs 24");
  RawTensor negative{DType::F32, {-1}, {}};
  CHECK_THROWS_WITH(vlm::io::write_safetensors(path, {{"neg", negative}}),
                    Contains(path + ": tensor \"neg\": holds 0 bytes but F32 [-1]"));
  CHECK_THROWS_WITH(
      vlm::io::write_safetensors(path, {{"__metadata__", vlm::io::raw_f32({2, 3}, v)}}),
      Contains("tensor \"__metadata__\": name is reserved"));
  CHECK_THROWS_WITH(vlm::io::write_safetensors(path, {{"bad\xff", vlm::io::raw_f32({2, 3}, v)}}),
                    Contains(path + ": tensor names and metadata must be valid UTF-8"));
  CHECK_THROWS_WITH(vlm::io::serialize_safetensors({{"bad", short_bytes}}),
                    Contains("<memory>: tensor \"bad\": holds 20 bytes"));
  CHECK(read_all(path) == first);

  // Overwrite goes through a temp file renamed into place: a hard link to the old file (think: a
  // reader that has it open) keeps the old bytes, the path gets the new ones, nothing is left over.
  const std::string alias = dir.file("alias.safetensors");
  fs::create_hard_link(path, alias);
  const std::vector<float> w = {9};
  vlm::io::write_safetensors(path, {{"x", vlm::io::raw_f32({1}, w)}});
  CHECK(vlm::io::read_safetensors(path).to_f32("x") == w);
  CHECK(read_all(alias) == first);
  fs::remove(alias);
  CHECK(dir.entry_count() == 1);

  const std::string nodir = dir.file("no/such/dir/out.safetensors");
  CHECK_THROWS_WITH(vlm::io::write_safetensors(nodir, {}),
                    Contains(nodir + ": cannot create temp file"));
  CHECK(dir.entry_count() == 1);
}

TEST_CASE("raw builders check the value count", "[io][safetensors]") {
  const std::vector<float> five(5, 1.0f);
  CHECK_THROWS_WITH(vlm::io::raw_f32({2, 3}, five), "raw_f32: shape [2, 3] needs 6 values, got 5");
  CHECK_THROWS_AS(vlm::io::raw_bool({3}, {true}), SafetensorsError);
  const std::vector<std::int64_t> one = {42};
  const RawTensor s = vlm::io::raw_i64({}, one);
  CHECK(s.dtype == DType::I64);
  CHECK(s.bytes.size() == 8);
  const RawTensor b = vlm::io::raw_bool({3}, {true, false, true});
  CHECK(b.dtype == DType::BOOL);
  CHECK(b.bytes == std::vector<std::uint8_t>{1, 0, 1});
}

TEST_CASE("header bytes after a NUL are rejected, JSON whitespace padding is not",
          "[io][safetensors][corrupt]") {
  // nlohmann stops at a NUL as at the end of input; the crate (serde_json) rejects it.
  const std::string entry = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  CHECK_THROWS_WITH(parse_header(entry + std::string(3, '\0'), 1),
                    "mem.safetensors: header has a NUL byte at byte " +
                        std::to_string(entry.size()) +
                        " of the header (only JSON whitespace may pad a header)");
  // What follows the NUL would change the file's meaning if it were read.
  CHECK_THROWS_WITH(parse_header(std::string("{}\0{\"b\":1}", 10), 0), Contains("NUL byte at byte 2"));
  CHECK_THROWS_WITH(parse_header(std::string("{\"a\0b\":1}", 9), 0), Contains("NUL byte at byte 3"));
  // The crate's own padding tests: any JSON whitespace before or after the object.
  CHECK(parse_header(entry + " \t\r\n", 1).tensors.size() == 1);
  CHECK(parse_header("\t\n" + entry + "\r ", 1).tensors.size() == 1);
  CHECK_THROWS_WITH(parse_header(entry + "\x0b", 1), Contains("header is not valid JSON"));
}

TEST_CASE("a header of 50,000 entries parses in linear time", "[io][safetensors]") {
  // nlohmann's callback parser rescans the root object after each entry (O(n^2): about 30 s here).
  constexpr int kEntries = 50'000;
  std::string header = "{";
  for (int i = 0; i < kEntries; ++i) {
    header += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(i) + "," + std::to_string(i + 1) + "]}";
  }
  header += "}";
  const std::vector<std::uint8_t> bytes = make_file(header, kEntries);
  const auto start = std::chrono::steady_clock::now();
  const Safetensors st = parse(bytes);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(st.tensors.size() == static_cast<std::size_t>(kEntries));
  CHECK(st.at("t49999").bytes == std::vector<std::uint8_t>{static_cast<std::uint8_t>(49999 % 256)});
  // Linear: well under a second optimised, a few seconds under the sanitizers.
  CHECK(seconds < 8.0);
}

TEST_CASE("errors stay short for huge names and values, and are vlm::Errors", "[io][safetensors][corrupt]") {
  const std::string name(100'000, 'n');
  std::string huge_dtype = "[";
  for (int i = 0; i < 100'000; ++i) huge_dtype += (i ? ",1" : "1");
  huge_dtype += "]";
  const auto message = [](const std::string& header) {
    try {
      parse_header(header, 0);
    } catch (const vlm::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string bad_dtype = message("{\"" + name + "\":{\"dtype\":" + huge_dtype +
                                        ",\"shape\":[0],\"data_offsets\":[0,0]}}");
  CHECK_THAT(bad_dtype, Contains("dtype must be a string, got [1,1,1") && Contains("...") &&
                            Contains("\"" + std::string(200, 'n') + "...\""));
  CHECK(bad_dtype.size() < 600);
  const std::string dup = message("{\"" + name + "\":1,\"" + name + "\":2}");
  CHECK_THAT(dup, Contains("duplicate key"));
  CHECK(dup.size() < 300);
}
