#include "lib/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

namespace vlm::io {

// The format is little-endian; we copy bytes straight into native values.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");
static_assert(sizeof(std::size_t) >= sizeof(std::uint64_t), "safetensors I/O assumes 64-bit");

namespace {

using Json = nlohmann::json;

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
// Hostile headers can hold 100 MB names or shapes; keep error messages readable.
constexpr std::size_t kMaxQuotedChars = 200;
constexpr std::size_t kMaxShapeDims = 16;

std::string display_source(const std::string& source) {
  return source.empty() ? std::string("<memory>") : source;
}

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw SafetensorsError(display_source(source) + ": " + what);
}

std::string quote_name(std::string_view s) {
  if (s.size() <= kMaxQuotedChars) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, kMaxQuotedChars)) + "...\"";
}

// A JSON value as text for a message, cut at kMaxQuotedChars characters.
std::string short_dump(const Json& v) {
  std::string s = v.dump();
  if (s.size() > kMaxQuotedChars) s = s.substr(0, kMaxQuotedChars) + "...";
  return s;
}

[[noreturn]] void fail_tensor(const std::string& source, std::string_view name,
                              const std::string& what) {
  fail(source, "tensor " + quote_name(name) + ": " + what);
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    if (i == kMaxShapeDims) {
      s += "... (" + std::to_string(shape.size()) + " dims)";
      break;
    }
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string offsets_str(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// Product of the shape in the crate's order (left fold), or nullopt on overflow/negative.
std::optional<std::int64_t> checked_numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

std::optional<std::uint64_t> checked_nbytes(DType dtype, const std::vector<std::int64_t>& shape) {
  std::optional<std::int64_t> n = checked_numel(shape);
  std::uint64_t bytes = 0;
  if (!n || __builtin_mul_overflow(static_cast<std::uint64_t>(*n), dtype_size(dtype), &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

// Rust's str::from_utf8 rules: no overlongs, no surrogates, nothing above U+10FFFF.
std::optional<std::size_t> first_invalid_utf8(std::span<const std::uint8_t> s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::uint8_t c = s[i];
    std::size_t len = 0;
    std::uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (s.size() - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::nullopt;
}

std::uint64_t load_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
T load(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Shared by file and memory reading: the 8-byte prefix against the total size.
std::uint64_t check_header_length(std::uint64_t n, std::uint64_t total, const std::string& src) {
  if (n > kMaxHeaderSize) {
    fail(src, "header length " + std::to_string(n) + " exceeds the limit of " +
                  std::to_string(kMaxHeaderSize) + " bytes");
  }
  if (n > total - 8) {
    fail(src, "header length " + std::to_string(n) + " runs past the end of the file (8 + " +
                  std::to_string(n) + " > " + std::to_string(total) + " bytes)");
  }
  return n;
}

void check_total_size(std::uint64_t total, const std::string& src) {
  if (total < 8) {
    fail(src,
         "file is " + std::to_string(total) + " bytes, too short for the 8-byte header length");
  }
}

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

struct Header {
  std::vector<Entry> entries;  // sorted by data_offsets
  std::map<std::string, std::string> metadata;
};

constexpr std::array<std::string_view, 6> kUnsupportedDtypes = {"F8_E5M2", "F8_E4M3", "F8_E8M0",
                                                                "F6_E2M3", "F6_E3M2", "F4"};

DType parse_entry_dtype(const Json& v, const std::string& src, const std::string& name) {
  if (!v.is_string()) fail_tensor(src, name, "dtype must be a string, got " + short_dump(v));
  const auto& s = v.get_ref<const std::string&>();
  if (std::optional<DType> d = parse_dtype(s)) return *d;
  if (std::find(kUnsupportedDtypes.begin(), kUnsupportedDtypes.end(), s) !=
      kUnsupportedDtypes.end()) {
    fail_tensor(src, name, "dtype " + quote_name(s) + " is not supported");
  }
  fail_tensor(src, name, "unknown dtype " + quote_name(s));
}

std::vector<std::int64_t> parse_entry_shape(const Json& v, const std::string& src,
                                            const std::string& name) {
  if (!v.is_array()) {
    fail_tensor(
        src, name,
        "shape must be an array of non-negative integers, got " + std::string(v.type_name()));
  }
  std::vector<std::int64_t> shape;
  shape.reserve(v.size());
  for (const Json& d : v) {
    if (d.is_number_unsigned()) {
      const auto u = d.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(kInt64Max)) {
        fail_tensor(src, name, "shape entry " + std::to_string(u) + " does not fit in int64");
      }
      shape.push_back(static_cast<std::int64_t>(u));
    } else if (d.is_number_integer()) {  // nlohmann keeps only negatives (and -0) signed
      const auto i = d.get<std::int64_t>();
      if (i < 0) fail_tensor(src, name, "shape entry " + std::to_string(i) + " is negative");
      shape.push_back(i);
    } else {
      fail_tensor(src, name,
                  "shape entry must be a non-negative integer, got " + std::string(d.type_name()));
    }
  }
  return shape;
}

std::pair<std::uint64_t, std::uint64_t> parse_entry_offsets(const Json& v, const std::string& src,
                                                            const std::string& name) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned()) {
    fail_tensor(src, name, "data_offsets must be [begin, end] of non-negative integers");
  }
  return {v[0].get<std::uint64_t>(), v[1].get<std::uint64_t>()};
}

Entry parse_entry(const std::string& name, const Json& v, std::uint64_t data_len,
                  const std::string& src) {
  if (!v.is_object()) {
    fail_tensor(src, name,
                "entry must be an object with dtype, shape and data_offsets, got " +
                    std::string(v.type_name()));
  }
  // Stricter than the crate (serde ignores unknown fields): a stray key is a typo or a hack.
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail_tensor(src, name, "unexpected key " + quote_name(key));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) fail_tensor(src, name, std::string("missing \"") + key + "\"");
  }
  Entry e;
  e.name = name;
  e.dtype = parse_entry_dtype(v["dtype"], src, name);
  e.shape = parse_entry_shape(v["shape"], src, name);
  std::tie(e.begin, e.end) = parse_entry_offsets(v["data_offsets"], src, name);
  const std::string offs = "data_offsets " + offsets_str(e.begin, e.end);
  if (e.end < e.begin) fail_tensor(src, name, offs + " end before begin");
  if (e.end > data_len) {
    fail_tensor(src, name,
                offs + " run past the end of the data (" + std::to_string(data_len) +
                    " bytes after the header)");
  }
  const std::string what = std::string(dtype_name(e.dtype)) + " " + shape_str(e.shape);
  if (!checked_numel(e.shape)) fail_tensor(src, name, "element count of " + what + " overflows");
  const std::optional<std::uint64_t> need = checked_nbytes(e.dtype, e.shape);
  if (!need) fail_tensor(src, name, "byte size of " + what + " overflows");
  if (e.end - e.begin != *need) {
    fail_tensor(src, name,
                offs + " hold " + std::to_string(e.end - e.begin) + " bytes but " + what +
                    " needs " + std::to_string(*need));
  }
  return e;
}

std::map<std::string, std::string> parse_metadata(const Json& v, const std::string& src) {
  std::map<std::string, std::string> out;
  if (v.is_null()) return out;  // the crate reads it as Option<HashMap>: null means absent
  if (!v.is_object()) {
    fail(src, "\"__metadata__\" must be an object of strings, got " + std::string(v.type_name()));
  }
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      fail(src, "\"__metadata__\" value for key " + quote_name(key) + " must be a string, got " +
                    std::string(value.type_name()));
    }
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// Checks what no valid header contains before the DOM is built, in one linear pass: duplicate keys
// (nlohmann would keep the last silently) and nesting below shape/data_offsets arrays (a memory
// bomb). A SAX pass rather than a parser callback: nlohmann's callback parser rescans the parent
// object after every child object ends, which makes a header of n entries parse in O(n^2).
class HeaderScanner : public nlohmann::json_sax<Json> {
 public:
  explicit HeaderScanner(const std::string& src) : src_(src) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    open();
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) fail(src_, "header has duplicate key " + quote_name(k));
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    open();
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    std::string msg = e.what();
    if (msg.size() > 2 * kMaxQuotedChars) msg = msg.substr(0, 2 * kMaxQuotedChars) + "...";
    fail(src_, "header is not valid JSON: " + msg);
  }

 private:
  // The root object, an entry (or __metadata__) object, then shape/data_offsets arrays: depth 3.
  void open() {
    if (depth_ >= 3) fail(src_, "header nests deeper than a safetensors header can");
    ++depth_;
  }

  const std::string& src_;
  int depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;
};

Json parse_json(std::span<const std::uint8_t> text, const std::string& src) {
  if (std::optional<std::size_t> bad = first_invalid_utf8(text)) {
    fail(src, "header is not valid UTF-8 (byte " + std::to_string(*bad) + " of the header)");
  }
  // nlohmann stops at a NUL byte as at the end of input, so "{...}\0anything" would parse. The crate
  // (serde_json over the whole header) allows only JSON whitespace (space, tab, CR, LF) around the
  // object, and JSON allows no raw NUL anywhere, so any NUL is an error.
  const auto nul = std::find(text.begin(), text.end(), std::uint8_t{0});
  if (nul != text.end()) {
    fail(src, "header has a NUL byte at byte " + std::to_string(nul - text.begin()) +
                  " of the header (only JSON whitespace may pad a header)");
  }
  const char* first = reinterpret_cast<const char*>(text.data());
  HeaderScanner scanner(src);
  Json::sax_parse(first, first + text.size(), &scanner, nlohmann::json::input_format_t::json,
                  /*strict=*/true, /*ignore_comments=*/false);
  try {
    return Json::parse(first, first + text.size(), nullptr, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const Json::exception& e) {  // the scan above has already reported any syntax error
    std::string msg = e.what();
    if (msg.size() > 2 * kMaxQuotedChars) msg = msg.substr(0, 2 * kMaxQuotedChars) + "...";
    fail(src, "header is not valid JSON: " + msg);
  }
}

// The header against data_len bytes of data following it; everything but reading the data.
Header parse_header(std::span<const std::uint8_t> text, std::uint64_t data_len,
                    const std::string& src) {
  const Json root = parse_json(text, src);
  if (!root.is_object()) {
    fail(src, "header must be a JSON object, got " + std::string(root.type_name()));
  }
  Header h;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      h.metadata = parse_metadata(value, src);
    } else {
      h.entries.push_back(parse_entry(key, value, data_len, src));
    }
  }
  // Like the crate: sort by offsets, then they must tile [0, end) exactly.
  std::sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : h.entries) {
    const std::string offs = "data_offsets " + offsets_str(e.begin, e.end);
    if (e.begin < pos) {
      fail_tensor(src, e.name,
                  offs + " overlap tensor " + quote_name(prev->name) + " " +
                      offsets_str(prev->begin, prev->end));
    }
    if (e.begin > pos) {
      if (prev == nullptr) {
        fail_tensor(src, e.name, offs + " leave a gap at the start of the data (must begin at 0)");
      }
      fail_tensor(src, e.name,
                  offs + " leave a gap after tensor " + quote_name(prev->name) + " (ends at " +
                      std::to_string(pos) + ")");
    }
    pos = e.end;
    prev = &e;
  }
  if (pos != data_len) {
    fail(src, "data after the header is " + std::to_string(data_len) +
                  " bytes but the tensors end at " + std::to_string(pos) + " (" +
                  std::to_string(data_len - pos) + " trailing bytes)");
  }
  return h;
}

RawTensor raw_from_entry(const Entry& e) {
  RawTensor t;
  t.dtype = e.dtype;
  t.shape = e.shape;
  return t;
}

// Byte size of t, checked against its shape, so conversions never read out of bounds.
std::size_t checked_size(const RawTensor& t, const std::string& src, const std::string& name) {
  const std::optional<std::uint64_t> need = checked_nbytes(t.dtype, t.shape);
  if (!need || *need != t.bytes.size()) {
    fail_tensor(src, name,
                "holds " + std::to_string(t.bytes.size()) + " bytes but " +
                    std::string(dtype_name(t.dtype)) + " " + shape_str(t.shape) + " needs " +
                    (need ? std::to_string(*need) : "more than 2^64"));
  }
  return t.bytes.size() / dtype_size(t.dtype);
}

bool is_float(DType d) {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

template <typename Out>
std::vector<Out> to_float(const Safetensors& st, const std::string& name) {
  const RawTensor& t = st.at(name);
  if (!is_float(t.dtype)) {
    fail_tensor(st.source, name,
                "is " + std::string(dtype_name(t.dtype)) + ", not a floating-point dtype");
  }
  const std::size_t n = checked_size(t, st.source, name);
  const std::uint8_t* p = t.bytes.data();
  std::vector<Out> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F64: out[i] = static_cast<Out>(load<double>(p + 8 * i)); break;
      case DType::F32: out[i] = static_cast<Out>(load<float>(p + 4 * i)); break;
      case DType::F16: out[i] = f16_to_f32(load<std::uint16_t>(p + 2 * i)); break;
      default: out[i] = bf16_to_f32(load<std::uint16_t>(p + 2 * i)); break;
    }
  }
  return out;
}

template <typename T>
void widen(const std::uint8_t* p, std::vector<std::int64_t>& out) {
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load<T>(p + sizeof(T) * i);
}

template <typename T>
RawTensor make_raw(DType dtype, std::vector<std::int64_t> shape, std::span<const T> values,
                   const char* fn) {
  const std::optional<std::int64_t> n = checked_numel(shape);
  if (!n || static_cast<std::uint64_t>(*n) != values.size()) {
    throw SafetensorsError(std::string(fn) + ": shape " + shape_str(shape) + " needs " +
                           (n ? std::to_string(*n) : "an invalid number of") + " values, got " +
                           std::to_string(values.size()));
  }
  RawTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// The crate's Dtype enum order, which it sorts by (descending) to lay out data by alignment.
int crate_rank(DType d) {
  switch (d) {
    case DType::BOOL: return 0;
    case DType::U8: return 1;
    case DType::I8: return 2;
    case DType::I16: return 5;
    case DType::U16: return 6;
    case DType::F16: return 7;
    case DType::BF16: return 8;
    case DType::I32: return 9;
    case DType::U32: return 10;
    case DType::F32: return 11;
    case DType::F64: return 12;
    case DType::I64: return 13;
    case DType::U64: return 14;
  }
  return 0;
}

struct Prepared {
  std::string header;  // JSON padded with spaces to a multiple of 8
  std::vector<const RawTensor*> order;
};

Prepared prepare(const std::map<std::string, RawTensor>& tensors,
                 const std::map<std::string, std::string>& metadata, const std::string& dest) {
  std::vector<std::pair<const std::string*, const RawTensor*>> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail_tensor(dest, name, "name is reserved for metadata");
    checked_size(t, dest, name);
    items.emplace_back(&name, &t);
  }
  // Same layout as the crate's serialize: dtype alignment descending, then name (the map is
  // already by name and the sort is stable).
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    return crate_rank(a.second->dtype) > crate_rank(b.second->dtype);
  });
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata.empty()) root["__metadata__"] = metadata;
  Prepared p;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : items) {
    const std::uint64_t end = offset + t->bytes.size();
    root[*name] = {
        {"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, end}}};
    offset = end;
    p.order.push_back(t);
  }
  try {
    p.header = root.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(dest, std::string("tensor names and metadata must be valid UTF-8: ") + e.what());
  }
  p.header.append((8 - p.header.size() % 8) % 8, ' ');
  return p;
}

std::array<std::uint8_t, 8> le_bytes(std::uint64_t v) {
  std::array<std::uint8_t, 8> b{};
  std::memcpy(b.data(), &v, 8);
  return b;
}

// Owns the temp file until commit(): closes and removes it on any failure path.
class TempFile {
 public:
  explicit TempFile(const std::string& final_path) : final_(final_path) {
    static std::atomic<std::uint64_t> counter{0};
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      path_ = final_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ < 0 && errno != EEXIST) break;
    }
    if (fd_ < 0) fail(final_, "cannot create temp file " + path_ + ": " + std::strerror(errno));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(final_, std::string("write failed: ") + std::strerror(errno));
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail(final_, std::string("fsync failed: ") + std::strerror(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail(final_, std::string("close failed: ") + std::strerror(errno));
    if (::rename(path_.c_str(), final_.c_str()) != 0) {
      fail(final_, "cannot rename " + path_ + " into place: " + std::strerror(errno));
    }
    committed_ = true;
  }

 private:
  std::string final_;
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U64: return "U64";
    case DType::U32: return "U32";
    case DType::U16: return "U16";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64:
    case DType::U64: return 8;
    case DType::F32:
    case DType::I32:
    case DType::U32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
    case DType::U16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
  }
  return 1;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType d :
       {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
        DType::I8, DType::U64, DType::U32, DType::U16, DType::U8, DType::BOOL}) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

float f16_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exp = (bits >> 10) & 0x1Fu;
  const std::uint32_t mant = bits & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign != 0 ? -mag : mag;
  }
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));  // rebias 15 -> 127
}

float bf16_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::int64_t RawTensor::numel() const {
  const std::optional<std::int64_t> n = checked_numel(shape);
  if (!n) throw SafetensorsError("shape " + shape_str(shape) + " is negative or overflows int64");
  return *n;
}

bool Safetensors::contains(const std::string& name) const {
  return tensors.count(name) != 0;
}

const RawTensor& Safetensors::at(const std::string& name) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) fail_tensor(source, name, "not found");
  return it->second;
}

std::vector<float> Safetensors::to_f32(const std::string& name) const {
  return to_float<float>(*this, name);
}

std::vector<double> Safetensors::to_f64(const std::string& name) const {
  return to_float<double>(*this, name);
}

std::vector<std::int64_t> Safetensors::to_i64(const std::string& name) const {
  const RawTensor& t = at(name);
  const std::size_t n = checked_size(t, source, name);
  const std::uint8_t* p = t.bytes.data();
  std::vector<std::int64_t> out(n);
  switch (t.dtype) {
    case DType::I64: widen<std::int64_t>(p, out); break;
    case DType::I32: widen<std::int32_t>(p, out); break;
    case DType::I16: widen<std::int16_t>(p, out); break;
    case DType::I8: widen<std::int8_t>(p, out); break;
    case DType::U32: widen<std::uint32_t>(p, out); break;
    case DType::U16: widen<std::uint16_t>(p, out); break;
    case DType::U8: widen<std::uint8_t>(p, out); break;
    case DType::BOOL:
      for (std::size_t i = 0; i < n; ++i) out[i] = p[i] != 0 ? 1 : 0;
      break;
    case DType::U64:
      for (std::size_t i = 0; i < n; ++i) {
        const auto u = load<std::uint64_t>(p + 8 * i);
        if (u > static_cast<std::uint64_t>(kInt64Max)) {
          fail_tensor(source, name,
                      "U64 element " + std::to_string(i) + " = " + std::to_string(u) +
                          " does not fit in int64");
        }
        out[i] = static_cast<std::int64_t>(u);
      }
      break;
    case DType::F64:
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      fail_tensor(source, name,
                  "is " + std::string(dtype_name(t.dtype)) + ", not an integer dtype");
  }
  return out;
}

Safetensors parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& source_name) {
  check_total_size(bytes.size(), source_name);
  const std::uint64_t n = check_header_length(load_u64_le(bytes.data()), bytes.size(), source_name);
  const std::span<const std::uint8_t> data = bytes.subspan(8 + n);
  Header h = parse_header(bytes.subspan(8, n), data.size(), source_name);
  Safetensors st;
  st.source = source_name;
  st.metadata = std::move(h.metadata);
  for (const Entry& e : h.entries) {
    RawTensor t = raw_from_entry(e);
    t.bytes.assign(data.begin() + static_cast<std::ptrdiff_t>(e.begin),
                   data.begin() + static_cast<std::ptrdiff_t>(e.end));
    st.tensors.emplace(e.name, std::move(t));
  }
  return st;
}

Safetensors read_safetensors(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) fail(path, "file not found");
  if (ec) fail(path, "cannot stat: " + ec.message());
  if (!fs::is_regular_file(status)) fail(path, "not a regular file");
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot get file size: " + ec.message());
  check_total_size(size, path);

  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  // Reads exactly n bytes; the file may have changed since its size was taken.
  auto read_exact = [&](void* dst, std::uint64_t n, const std::string& what) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (static_cast<std::uint64_t>(in.gcount()) != n) {
      fail(path, "file ended early while reading " + what);
    }
  };

  std::array<std::uint8_t, 8> prefix{};
  read_exact(prefix.data(), 8, "the header length");
  // Both limits are checked before the header buffer is allocated.
  const std::uint64_t n = check_header_length(load_u64_le(prefix.data()), size, path);
  std::vector<std::uint8_t> header(n);
  read_exact(header.data(), n, "the header");
  Header h = parse_header(header, size - 8 - n, path);

  Safetensors st;
  st.source = path;
  st.metadata = std::move(h.metadata);
  for (const Entry& e : h.entries) {  // offset order, contiguous: one sequential pass
    RawTensor t = raw_from_entry(e);
    t.bytes.resize(e.end - e.begin);
    read_exact(t.bytes.data(), t.bytes.size(), "tensor " + quote_name(e.name));
    st.tensors.emplace(e.name, std::move(t));
  }
  return st;
}

std::vector<std::uint8_t> serialize_safetensors(
    const std::map<std::string, RawTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  const Prepared p = prepare(tensors, metadata, "");
  std::size_t total = 8 + p.header.size();
  for (const RawTensor* t : p.order) total += t->bytes.size();
  // Sized once and filled with memcpy: GCC 12 -O3 misreads repeated vector::insert as an overflow.
  std::vector<std::uint8_t> out(total);
  const std::array<std::uint8_t, 8> len = le_bytes(p.header.size());
  std::memcpy(out.data(), len.data(), len.size());
  std::size_t at = len.size();
  std::memcpy(out.data() + at, p.header.data(), p.header.size());
  at += p.header.size();
  for (const RawTensor* t : p.order) {
    if (!t->bytes.empty()) std::memcpy(out.data() + at, t->bytes.data(), t->bytes.size());
    at += t->bytes.size();
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const Prepared p = prepare(tensors, metadata, path);
  TempFile tmp(path);
  const std::array<std::uint8_t, 8> len = le_bytes(p.header.size());
  tmp.write(len.data(), len.size());
  tmp.write(p.header.data(), p.header.size());
  for (const RawTensor* t : p.order) tmp.write(t->bytes.data(), t->bytes.size());
  tmp.commit();
}

RawTensor raw_f32(std::vector<std::int64_t> shape, std::span<const float> values) {
  return make_raw(DType::F32, std::move(shape), values, "raw_f32");
}

RawTensor raw_f64(std::vector<std::int64_t> shape, std::span<const double> values) {
  return make_raw(DType::F64, std::move(shape), values, "raw_f64");
}

RawTensor raw_i64(std::vector<std::int64_t> shape, std::span<const std::int64_t> values) {
  return make_raw(DType::I64, std::move(shape), values, "raw_i64");
}

RawTensor raw_i32(std::vector<std::int64_t> shape, std::span<const std::int32_t> values) {
  return make_raw(DType::I32, std::move(shape), values, "raw_i32");
}

RawTensor raw_bool(std::vector<std::int64_t> shape, const std::vector<bool>& values) {
  std::vector<std::uint8_t> bytes(values.begin(), values.end());
  RawTensor t =
      make_raw(DType::U8, std::move(shape), std::span<const std::uint8_t>(bytes), "raw_bool");
  t.dtype = DType::BOOL;
  return t;
}

}  // namespace vlm::io
