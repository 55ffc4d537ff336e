#include "lib/io/h5.h"

#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

#include "lib/io/durable.h"

namespace vlm::io {

namespace {

// ---- errors ----

// The C++ API's exceptions say only which call failed ("H5Fcreate failed"); the reason (errno,
// "file signature not found", ...) is on HDF5's per-thread error stack, which the next API call
// clears -- and destructors of HDF5 objects run API calls during unwinding. So instead of printing
// the stack, HDF5's automatic error hook records it here, at the moment of failure.
thread_local std::string last_hdf5_error;

herr_t collect_desc(unsigned /*n*/, const H5E_error2_t* err, void* client) {
  auto* descs = static_cast<std::vector<std::string>*>(client);
  if (err != nullptr && err->desc != nullptr && err->desc[0] != '\0') descs->emplace_back(err->desc);
  return 0;
}

herr_t record_error_stack(hid_t estack, void* /*client*/) {
  // The first failure is the cause; later ones (closing objects while unwinding) are fallout.
  if (!last_hdf5_error.empty()) return 0;
  std::vector<std::string> descs;  // outermost (API level) first, root cause last
  H5Ewalk2(estack, H5E_WALK_DOWNWARD, collect_desc, &descs);
  std::ostringstream os;
  if (!descs.empty()) {
    os << descs.front();
    if (descs.size() > 1 && descs.back() != descs.front()) os << ": " << descs.back();
  }
  last_hdf5_error = os.str();
  return 0;
}

// The automatic error hook is per thread in a thread-safe libhdf5, so every entry point calls this.
void quiet_hdf5() {
  thread_local bool done = false;
  if (done) return;
  H5::Exception::dontPrint();  // HDF5 must never print to stderr behind the caller's back
  H5Eset_auto2(H5E_DEFAULT, record_error_stack, nullptr);
  done = true;
}

[[noreturn]] void fail(const std::string& file, const std::string& object, const std::string& msg) {
  std::ostringstream os;
  os << file;
  if (!object.empty()) os << ": " << object;
  os << ": " << msg;
  throw vlm::Error(os.str());
}

// Runs `body`, turning an H5::Exception into a vlm::Error naming the file, the object and what was
// being done. vlm::Errors thrown by the body pass through unchanged.
template <class F>
auto guarded(const std::string& file, const std::string& object, const char* what, F&& body)
    -> decltype(body()) {
  quiet_hdf5();
  last_hdf5_error.clear();
  try {
    return body();
  } catch (const H5::Exception& e) {
    std::ostringstream os;
    os << what << " failed";
    if (!last_hdf5_error.empty()) {
      os << ": " << last_hdf5_error;
    } else if (!e.getDetailMsg().empty()) {
      os << ": " << e.getDetailMsg();
    }
    fail(file, object, os.str());
  }
}

// ---- paths ----

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(std::move(cur));
  return parts;
}

// Absolute, no repeated or trailing slashes: "runs//a/" -> "/runs/a"; "" -> "/".
std::string normalize(const std::string& path) {
  std::string out;
  for (const auto& p : split_path(path)) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

// ---- types ----

H5::StrType utf8_vlen_string() {
  H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
  t.setCset(H5T_CSET_UTF8);
  return t;
}

void check_no_nul(const std::string& file, const std::string& object, const std::string& what,
                  const std::string& s) {
  // HDF5 stores variable-length strings NUL-terminated: an embedded NUL would silently truncate.
  if (s.find('\0') != std::string::npos) {
    std::ostringstream os;
    os << what << " contains a NUL byte";
    fail(file, object, os.str());
  }
}

const char* type_name(std::size_t variant_index) {
  static const char* const names[] = {"int64", "double", "string"};
  return names[variant_index];
}

// Frees the strings HDF5 allocated for a variable-length read, also on the exception path.
struct VlenGuard {
  void* buf;
  const H5::DataType& type;
  const H5::DataSpace& space;
  ~VlenGuard() {
    H5Dvlen_reclaim(type.getId(), space.getId(), H5P_DEFAULT, buf);
  }
};

}  // namespace

// ---- Column / Table ----

std::size_t Column::size() const {
  return std::visit([](const auto& v) { return v.size(); }, values);
}

namespace {
template <class T>
const std::vector<T>& typed(const Column& c, std::size_t want) {
  if (c.values.index() != want) {
    std::ostringstream os;
    os << "column \"" << c.name << "\" holds " << type_name(c.values.index()) << ", not "
       << type_name(want);
    throw vlm::Error(os.str());
  }
  return std::get<std::vector<T>>(c.values);
}
}  // namespace

const std::vector<int64_t>& Column::ints() const { return typed<int64_t>(*this, 0); }
const std::vector<double>& Column::doubles() const { return typed<double>(*this, 1); }
const std::vector<std::string>& Column::strings() const { return typed<std::string>(*this, 2); }

std::size_t Table::rows() const { return columns.empty() ? 0 : columns.front().size(); }

bool Table::has(const std::string& name) const {
  return std::any_of(columns.begin(), columns.end(), [&](const Column& c) { return c.name == name; });
}

const Column& Table::at(const std::string& name) const {
  for (const auto& c : columns) {
    if (c.name == name) return c;
  }
  std::ostringstream os;
  os << "table has no column \"" << name << "\"";
  throw vlm::Error(os.str());
}

Table& Table::add_ints(std::string name, std::vector<int64_t> v) {
  columns.push_back(Column{std::move(name), std::move(v)});
  return *this;
}
Table& Table::add_doubles(std::string name, std::vector<double> v) {
  columns.push_back(Column{std::move(name), std::move(v)});
  return *this;
}
Table& Table::add_strings(std::string name, std::vector<std::string> v) {
  columns.push_back(Column{std::move(name), std::move(v)});
  return *this;
}

void Table::validate() const {
  std::set<std::string> seen;
  for (const auto& c : columns) {
    VLM_CHECK(!c.name.empty(), "table column with an empty name");
    VLM_CHECK(seen.insert(c.name).second, "table column \"" << c.name << "\" appears twice");
    VLM_CHECK(c.size() == rows(), "table column \"" << c.name << "\" has " << c.size()
                                                    << " rows, column \"" << columns.front().name
                                                    << "\" has " << rows());
  }
}

// ---- H5File ----

struct H5File::Impl {
  // Built in place: H5::H5File's implicit copy assignment is deprecated (it has a user destructor).
  Impl(const std::string& path, unsigned flags, const H5::FileAccPropList& fapl)
      : file(path, flags, H5::FileCreatPropList::DEFAULT, fapl) {}
  H5::H5File file;
};

namespace {

H5::FileAccPropList file_access() {
  H5::FileAccPropList fapl;
  // Closing the file closes every object still open in it, so after close() (and before
  // write_atomically's fsync + rename) nothing of the file is left behind in the library.
  fapl.setFcloseDegree(H5F_CLOSE_STRONG);
  return fapl;
}

H5::LinkCreatPropList make_parents() {
  H5::LinkCreatPropList lcpl;
  lcpl.setCreateIntermediateGroup(true);
  return lcpl;
}

bool exists_in(const H5::H5File& f, const std::string& path) {
  const auto parts = split_path(path);
  std::string prefix;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    prefix += '/';
    prefix += parts[i];
    if (!f.nameExists(prefix)) return false;
    // H5Lexists fails (rather than answering false) below a dataset, so stop at one.
    if (i + 1 < parts.size() && f.childObjType(prefix) != H5O_TYPE_GROUP) return false;
  }
  return true;
}

H5O_type_t object_type(const H5::H5File& f, const std::string& file, const std::string& path) {
  if (path == "/") return H5O_TYPE_GROUP;
  if (!exists_in(f, path)) fail(file, path, "no such object");
  return f.childObjType(path);
}

// A group or a dataset, whichever the path names. (H5Object's destructor is protected, so it is
// held by value rather than through a base-class pointer.)
class OpenObject {
 public:
  explicit OpenObject(H5::Group g) : obj_(std::move(g)) {}
  explicit OpenObject(H5::DataSet d) : obj_(std::move(d)) {}
  H5::H5Object* operator->() {
    return std::visit([](auto& o) -> H5::H5Object* { return &o; }, obj_);
  }

 private:
  std::variant<H5::Group, H5::DataSet> obj_;
};

OpenObject open_object(const H5::H5File& f, const std::string& file, const std::string& path) {
  switch (object_type(f, file, path)) {
    case H5O_TYPE_GROUP:
      return OpenObject(f.openGroup(path));
    case H5O_TYPE_DATASET:
      return OpenObject(f.openDataSet(path));
    default:
      fail(file, path, "neither a group nor a dataset");
  }
}

H5::DataSet open_dataset(const H5::H5File& f, const std::string& file, const std::string& path) {
  if (object_type(f, file, path) != H5O_TYPE_DATASET) fail(file, path, "not a dataset");
  return f.openDataSet(path);
}

hsize_t rank1_length(const H5::DataSet& ds, const std::string& file, const std::string& path) {
  const H5::DataSpace space = ds.getSpace();
  if (space.getSimpleExtentNdims() != 1) {
    std::ostringstream os;
    os << "expected a 1-D dataset, found rank " << space.getSimpleExtentNdims();
    fail(file, path, os.str());
  }
  hsize_t n = 0;
  space.getSimpleExtentDims(&n);
  return n;
}

AttrValue read_attribute(const H5::Attribute& a, const std::string& file, const std::string& where) {
  if (a.getSpace().getSimpleExtentNpoints() != 1) fail(file, where, "attribute is not a scalar");
  switch (a.getTypeClass()) {
    case H5T_INTEGER: {
      int64_t v = 0;
      a.read(H5::PredType::NATIVE_INT64, &v);
      return v;
    }
    case H5T_FLOAT: {
      double v = 0;
      a.read(H5::PredType::NATIVE_DOUBLE, &v);
      return v;
    }
    case H5T_STRING: {
      // The attribute's own string type as memory type: the C++ API then picks the variable- or
      // fixed-length path itself, and no charset conversion is asked of HDF5.
      std::string v;
      a.read(a.getStrType(), v);
      // Fixed-length strings come back padded to their size.
      v.erase(std::find(v.begin(), v.end(), '\0'), v.end());
      return v;
    }
    default:
      fail(file, where, "attribute is not an integer, float or string");
  }
}

}  // namespace

H5File::H5File(std::unique_ptr<Impl> impl, std::string path)
    : impl_(std::move(impl)), path_(std::move(path)) {}

H5File::H5File(H5File&&) noexcept = default;
H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    close_quietly();
    impl_ = std::move(other.impl_);
    path_ = std::move(other.path_);
  }
  return *this;
}

H5File::~H5File() { close_quietly(); }

void H5File::close_quietly() noexcept {
  if (!impl_) return;
  try {
    quiet_hdf5();
    impl_->file.close();
  } catch (...) {
    // A destructor must not throw; the caller who cares about close errors calls close().
  }
  impl_.reset();
}

H5File::Impl& H5File::impl(const char* op) const {
  if (!impl_) {
    std::ostringstream os;
    os << path_ << ": " << op << " on a closed file";
    throw vlm::Error(os.str());
  }
  return *impl_;
}

H5File H5File::create(const std::string& path) {
  return guarded(path, "", "creating the file", [&] {
    return H5File(std::make_unique<Impl>(path, H5F_ACC_TRUNC, file_access()), path);
  });
}

H5File H5File::create_in_memory(const std::string& label) {
  return guarded(label, "", "creating the file in memory", [&] {
    H5::FileAccPropList fapl = file_access();
    // 1 MiB increments, no backing store: the file lives in memory until image() copies it out.
    if (H5Pset_fapl_core(fapl.getId(), 1 << 20, false) < 0) fail(label, "", "cannot select the core driver");
    return H5File(std::make_unique<Impl>(label, H5F_ACC_TRUNC, fapl), label);
  });
}

std::vector<std::uint8_t> H5File::image() {
  auto& f = impl("image").file;
  return guarded(path_, "", "copying the file image", [&] {
    f.flush(H5F_SCOPE_GLOBAL);
    const ssize_t n = H5Fget_file_image(f.getId(), nullptr, 0);
    if (n < 0) fail(path_, "", "cannot size the file image");
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n));
    if (H5Fget_file_image(f.getId(), bytes.data(), bytes.size()) != n) fail(path_, "", "cannot copy the file image");
    return bytes;
  });
}

H5File H5File::open_read(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(path, "", "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "", "not a regular file");
  return guarded(path, "", "opening the file", [&] {
    if (!H5::H5File::isHdf5(path)) fail(path, "", "not an HDF5 file");
    return H5File(std::make_unique<Impl>(path, H5F_ACC_RDONLY, file_access()), path);
  });
}

void H5File::make_groups(const std::string& path) {
  const std::string p = normalize(path);
  auto& f = impl("make_groups").file;
  guarded(path_, p, "creating groups", [&] {
    std::string prefix;
    for (const auto& part : split_path(p)) {
      prefix += '/';
      prefix += part;
      if (!f.nameExists(prefix)) {
        f.createGroup(prefix);
      } else if (f.childObjType(prefix) != H5O_TYPE_GROUP) {
        fail(path_, prefix, "exists and is not a group");
      }
    }
  });
}

void H5File::set_attr(const std::string& object_path, const std::string& name, const AttrValue& v) {
  const std::string p = normalize(object_path);
  auto& f = impl("set_attr").file;
  std::ostringstream where_os;
  where_os << p << " attribute \"" << name << "\"";
  const std::string where = where_os.str();
  if (name.empty()) fail(path_, p, "empty attribute name");
  if (const auto* s = std::get_if<std::string>(&v)) check_no_nul(path_, where, "value", *s);
  guarded(path_, where, "writing the attribute", [&] {
    auto obj = open_object(f, path_, p);
    // Replacing rather than overwriting in place, since the new value's type may differ.
    if (obj->attrExists(name)) obj->removeAttr(name);
    const H5::DataSpace scalar(H5S_SCALAR);
    if (const auto* i = std::get_if<int64_t>(&v)) {
      obj->createAttribute(name, H5::PredType::STD_I64LE, scalar)
          .write(H5::PredType::NATIVE_INT64, i);
    } else if (const auto* d = std::get_if<double>(&v)) {
      obj->createAttribute(name, H5::PredType::IEEE_F64LE, scalar)
          .write(H5::PredType::NATIVE_DOUBLE, d);
    } else {
      const H5::StrType t = utf8_vlen_string();
      obj->createAttribute(name, t, scalar).write(t, std::get<std::string>(v));
    }
  });
}

AttrValue H5File::attr(const std::string& object_path, const std::string& name) const {
  const std::string p = normalize(object_path);
  const auto& f = impl("attr").file;
  std::ostringstream where_os;
  where_os << p << " attribute \"" << name << "\"";
  const std::string where = where_os.str();
  return guarded(path_, where, "reading the attribute", [&] {
    auto obj = open_object(f, path_, p);
    if (!obj->attrExists(name)) fail(path_, where, "no such attribute");
    return read_attribute(obj->openAttribute(name), path_, where);
  });
}

std::map<std::string, AttrValue> H5File::attrs(const std::string& object_path) const {
  const std::string p = normalize(object_path);
  const auto& f = impl("attrs").file;
  return guarded(path_, p, "reading attributes", [&] {
    auto obj = open_object(f, path_, p);
    std::map<std::string, AttrValue> out;
    const int n = obj->getNumAttrs();
    for (int i = 0; i < n; ++i) {
      const H5::Attribute a = obj->openAttribute(static_cast<unsigned>(i));
      std::string name = a.getName();
      std::ostringstream where;
      where << p << " attribute \"" << name << "\"";
      out.emplace(std::move(name), read_attribute(a, path_, where.str()));
    }
    return out;
  });
}

void H5File::write_table(const std::string& path, const Table& t) {
  const std::string p = normalize(path);
  auto& f = impl("write_table").file;
  if (t.columns.empty()) fail(path_, p, "a table needs at least one column");
  try {
    t.validate();
  } catch (const vlm::Error& e) {
    fail(path_, p, e.what());
  }
  for (const auto& c : t.columns) {
    if (const auto* s = std::get_if<std::vector<std::string>>(&c.values)) {
      std::ostringstream what;
      what << "a value of column \"" << c.name << "\"";
      for (const auto& v : *s) check_no_nul(path_, p, what.str(), v);
    }
  }
  guarded(path_, p, "writing the table", [&] {
    if (exists_in(f, p)) fail(path_, p, "already exists");
    // Memory rows are packed records of 8-byte fields (int64, double, char*), naturally aligned.
    // The file type names the byte order explicitly; on little-endian hosts no conversion happens.
    const std::size_t ncol = t.columns.size();
    std::vector<std::size_t> offsets(ncol);
    std::size_t row_size = 0;
    for (std::size_t j = 0; j < ncol; ++j) {
      offsets[j] = row_size;
      row_size += t.columns[j].values.index() == 2 ? sizeof(const char*) : 8;
    }
    const H5::StrType str = utf8_vlen_string();
    H5::CompType mem(row_size), file(row_size);
    for (std::size_t j = 0; j < ncol; ++j) {
      const Column& c = t.columns[j];
      switch (c.values.index()) {
        case 0:
          mem.insertMember(c.name, offsets[j], H5::PredType::NATIVE_INT64);
          file.insertMember(c.name, offsets[j], H5::PredType::STD_I64LE);
          break;
        case 1:
          mem.insertMember(c.name, offsets[j], H5::PredType::NATIVE_DOUBLE);
          file.insertMember(c.name, offsets[j], H5::PredType::IEEE_F64LE);
          break;
        default:
          mem.insertMember(c.name, offsets[j], str);
          file.insertMember(c.name, offsets[j], str);
          break;
      }
    }
    const std::size_t n = t.rows();
    const hsize_t dims[1] = {static_cast<hsize_t>(n)};
    const H5::DataSpace space(1, dims);
    H5::DataSet ds = f.createDataSet(p, file, space, H5::DSetCreatPropList::DEFAULT,
                                     H5::DSetAccPropList::DEFAULT, make_parents());
    if (n == 0) return;  // an empty dataset has nothing to write
    std::vector<unsigned char> buf(n * row_size);
    for (std::size_t j = 0; j < ncol; ++j) {
      std::visit(
          [&](const auto& v) {
            for (std::size_t i = 0; i < n; ++i) {
              unsigned char* dst = buf.data() + i * row_size + offsets[j];
              if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::vector<std::string>>) {
                // HDF5 reads a variable-length string through a char* to its NUL-terminated data.
                const char* s = v[i].c_str();
                std::memcpy(dst, &s, sizeof s);
              } else {
                std::memcpy(dst, &v[i], sizeof v[i]);
              }
            }
          },
          t.columns[j].values);
    }
    ds.write(buf.data(), mem);
  });
}

Table H5File::read_table(const std::string& path) const {
  const std::string p = normalize(path);
  const auto& f = impl("read_table").file;
  return guarded(path_, p, "reading the table", [&] {
    const H5::DataSet ds = open_dataset(f, path_, p);
    if (ds.getTypeClass() != H5T_COMPOUND) fail(path_, p, "not a table (compound dataset)");
    const std::size_t n = static_cast<std::size_t>(rank1_length(ds, path_, p));
    const H5::CompType ft = ds.getCompType();
    const H5::DataSpace space = ds.getSpace();
    Table t;
    const int nmembers = ft.getNmembers();
    for (int m = 0; m < nmembers; ++m) {
      const auto mi = static_cast<unsigned>(m);
      const std::string name = ft.getMemberName(mi);
      // One column at a time through a one-field memory type: HDF5 matches compound fields by name.
      switch (ft.getMemberClass(mi)) {
        case H5T_INTEGER: {
          std::vector<int64_t> v(n);
          H5::CompType mt(sizeof(int64_t));
          mt.insertMember(name, 0, H5::PredType::NATIVE_INT64);
          if (n > 0) ds.read(v.data(), mt);
          t.add_ints(name, std::move(v));
          break;
        }
        case H5T_FLOAT: {
          std::vector<double> v(n);
          H5::CompType mt(sizeof(double));
          mt.insertMember(name, 0, H5::PredType::NATIVE_DOUBLE);
          if (n > 0) ds.read(v.data(), mt);
          t.add_doubles(name, std::move(v));
          break;
        }
        case H5T_STRING: {
          const H5::StrType st = ft.getMemberStrType(mi);
          std::vector<std::string> v(n);
          if (st.isVariableStr()) {
            std::vector<char*> ptrs(n, nullptr);
            H5::CompType mt(sizeof(char*));
            mt.insertMember(name, 0, st);
            if (n > 0) {
              // Armed before the read: a read failing midway may already have allocated some.
              const VlenGuard reclaim{ptrs.data(), mt, space};
              ds.read(ptrs.data(), mt);
              for (std::size_t i = 0; i < n; ++i) {
                if (ptrs[i] != nullptr) v[i] = ptrs[i];
              }
            }
          } else {
            // Fixed-length (numpy "S<n>" as h5py writes it): NUL- or space-padded.
            const std::size_t width = st.getSize();
            std::vector<char> raw(n * width);
            H5::CompType mt(width);
            mt.insertMember(name, 0, st);
            if (n > 0) ds.read(raw.data(), mt);
            for (std::size_t i = 0; i < n; ++i) {
              std::string s(raw.data() + i * width, width);
              s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
              if (st.getStrpad() == H5T_STR_SPACEPAD) s.erase(s.find_last_not_of(' ') + 1);
              v[i] = std::move(s);
            }
          }
          t.add_strings(name, std::move(v));
          break;
        }
        default: {
          std::ostringstream os;
          os << "field \"" << name << "\" is not an integer, float or string";
          fail(path_, p, os.str());
        }
      }
    }
    return t;
  });
}

void H5File::write_doubles(const std::string& path, const std::vector<double>& v) {
  const std::string p = normalize(path);
  auto& f = impl("write_doubles").file;
  guarded(path_, p, "writing the dataset", [&] {
    if (exists_in(f, p)) fail(path_, p, "already exists");
    const hsize_t dims[1] = {static_cast<hsize_t>(v.size())};
    const H5::DataSpace space(1, dims);
    H5::DataSet ds = f.createDataSet(p, H5::PredType::IEEE_F64LE, space,
                                     H5::DSetCreatPropList::DEFAULT, H5::DSetAccPropList::DEFAULT,
                                     make_parents());
    if (!v.empty()) ds.write(v.data(), H5::PredType::NATIVE_DOUBLE);
  });
}

std::vector<double> H5File::read_doubles(const std::string& path) const {
  const std::string p = normalize(path);
  const auto& f = impl("read_doubles").file;
  return guarded(path_, p, "reading the dataset", [&] {
    const H5::DataSet ds = open_dataset(f, path_, p);
    if (ds.getTypeClass() != H5T_FLOAT) fail(path_, p, "not a floating-point dataset");
    std::vector<double> v(static_cast<std::size_t>(rank1_length(ds, path_, p)));
    if (!v.empty()) ds.read(v.data(), H5::PredType::NATIVE_DOUBLE);
    return v;
  });
}

std::vector<std::string> H5File::children(const std::string& group_path) const {
  const std::string p = normalize(group_path);
  const auto& f = impl("children").file;
  return guarded(path_, p, "listing the group", [&] {
    if (object_type(f, path_, p) != H5O_TYPE_GROUP) fail(path_, p, "not a group");
    const H5::Group g = f.openGroup(p);
    std::vector<std::string> names;
    const hsize_t n = g.getNumObjs();
    for (hsize_t i = 0; i < n; ++i) names.push_back(g.getObjnameByIdx(i));
    std::sort(names.begin(), names.end());
    return names;
  });
}

bool H5File::exists(const std::string& path) const {
  const std::string p = normalize(path);
  const auto& f = impl("exists").file;
  return guarded(path_, p, "looking up the path", [&] { return exists_in(f, p); });
}

void H5File::copy_from(const H5File& src, const std::string& src_path, const std::string& dst_path) {
  const std::string sp = normalize(src_path);
  const std::string dp = normalize(dst_path);
  auto& f = impl("copy_from").file;
  const auto& sf = src.impl("copy_from (source)").file;
  std::ostringstream what;
  what << "copying " << src.path_ << ": " << sp;
  guarded(path_, dp, what.str().c_str(), [&] {
    if (!exists_in(sf, sp)) fail(src.path_, sp, "no such object");
    if (exists_in(f, dp)) fail(path_, dp, "already exists");
    // The C++ API has no wrapper for H5Ocopy. Default copy flags: recursive, attributes included.
    const H5::LinkCreatPropList lcpl = make_parents();
    if (H5Ocopy(sf.getId(), sp.c_str(), f.getId(), dp.c_str(), H5P_DEFAULT, lcpl.getId()) < 0) {
      std::ostringstream os;
      os << what.str() << " failed";
      if (!last_hdf5_error.empty()) os << ": " << last_hdf5_error;
      fail(path_, dp, os.str());
    }
  });
}

void H5File::flush() {
  auto& f = impl("flush").file;
  guarded(path_, "", "flushing", [&] { f.flush(H5F_SCOPE_GLOBAL); });
}

void H5File::close() {
  if (!impl_) return;
  // Released even if closing fails: a half-closed handle is of no further use.
  std::unique_ptr<Impl> impl = std::move(impl_);
  guarded(path_, "", "closing", [&] { impl->file.close(); });
}

// ---- atomic replacement ----

void write_atomically(const std::string& path, const std::function<void(H5File&)>& fill) {
  // Built in memory (HDF5's core driver, no backing store), so no disk error can reach libhdf5: 1.10
  // crashed inside H5Ocopy and H5Fclose on a full disk. The finished image is written by
  // write_file_atomically, whose every failure is an error naming `path`, leaving it as it was.
  static std::atomic<unsigned> serial{0};
  const std::string label = path + " (in memory " + std::to_string(::getpid()) + "." + std::to_string(serial++) + ")";
  std::vector<std::uint8_t> image;
  {
    H5File f = H5File::create_in_memory(label);
    fill(f);
    if (!f.is_open()) fail(path, "", "the file was closed before it was written");
    image = f.image();
    f.close();
  }
  write_file_atomically(path, image);
}

}  // namespace vlm::io
