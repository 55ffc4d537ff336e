// A small generic HDF5 layer for results files: column tables stored as 1-D compound datasets,
// raw float64 sample arrays, scalar attributes for metadata, and groups. Everything it writes
// reads back with h5py into pandas without help (pandas.DataFrame(f["/summary"][()])).
// It knows nothing of experiments.
//
// Stored types: int64 as little-endian 64-bit integers, doubles as IEEE float64, strings as
// variable-length UTF-8 (h5py gives str for attributes and bytes inside compound tables).
// Every failure, including those inside HDF5, is a vlm::Error naming the file and the object path;
// HDF5's own error-stack printing is switched off.
//
// HDF5 objects are not shared between threads here: use one H5File per thread (Debian's libhdf5 is
// built thread-safe, so separate files in separate threads are fine).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "lib/core/check.h"

namespace vlm::io {

// One column of a Table. The variant index says its type; the typed getters throw a vlm::Error
// naming the column when the type is not the one asked for.
struct Column {
  std::string name;
  std::variant<std::vector<int64_t>, std::vector<double>, std::vector<std::string>> values;

  std::size_t size() const;
  const std::vector<int64_t>& ints() const;
  const std::vector<double>& doubles() const;
  const std::vector<std::string>& strings() const;
};

// A column-oriented table: each column int64, double or UTF-8 string, all the same length.
// The add_* helpers are named per type (not overloads) so that add("x", {1, 2}) cannot be ambiguous.
struct Table {
  std::vector<Column> columns;

  // Rows of the first column (0 without columns); write_table checks the others agree.
  std::size_t rows() const;
  bool has(const std::string& name) const;
  const Column& at(const std::string& name) const;  // vlm::Error naming the column if absent

  Table& add_ints(std::string name, std::vector<int64_t> v);
  Table& add_doubles(std::string name, std::vector<double> v);
  Table& add_strings(std::string name, std::vector<std::string> v);

  // Throws a vlm::Error if a column name is empty or repeated or the lengths differ.
  void validate() const;
};

using AttrValue = std::variant<int64_t, double, std::string>;

class H5File {
 public:
  static H5File create(const std::string& path);     // creates or truncates
  // A file in memory only (HDF5's core driver); `label` names it in errors. image() gives its bytes.
  static H5File create_in_memory(const std::string& label);
  std::vector<std::uint8_t> image();
  static H5File open_read(const std::string& path);  // read-only; vlm::Error if missing or not HDF5

  H5File(H5File&&) noexcept;
  H5File& operator=(H5File&&) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  const std::string& path() const { return path_; }
  bool is_open() const { return impl_ != nullptr; }

  // Like mkdir -p: creates every missing group on the way ("/runs/abc"); an existing group is fine,
  // an existing dataset in the way is an error.
  void make_groups(const std::string& path);

  // Scalar attribute on "/", a group or a dataset; an existing attribute of that name is replaced.
  void set_attr(const std::string& object_path, const std::string& name, const AttrValue& v);
  // Integer attributes of any width come back as int64, floats as double, strings (variable or
  // fixed length) as std::string; anything else (arrays, compounds) is a vlm::Error.
  AttrValue attr(const std::string& object_path, const std::string& name) const;
  std::map<std::string, AttrValue> attrs(const std::string& object_path) const;

  // Writing creates missing parent groups; an existing object at `path` is an error (files are
  // written once, whole, through write_atomically, so nothing is ever updated in place).
  // A table is a 1-D compound dataset with one field per column, in column order; 0 rows is fine,
  // 0 columns is not (HDF5 has no empty compound type).
  void write_table(const std::string& path, const Table& t);
  // Reads integer fields as int64, float fields as double, variable-length string fields as
  // std::string; other field types (fixed-length strings, nested compounds) are a vlm::Error.
  Table read_table(const std::string& path) const;
  void write_doubles(const std::string& path, const std::vector<double>& v);  // 1-D float64
  std::vector<double> read_doubles(const std::string& path) const;

  std::vector<std::string> children(const std::string& group_path) const;  // names, sorted
  bool exists(const std::string& path) const;  // "/" always exists; false for a missing parent

  // Deep copy (H5Ocopy) of a group or dataset with everything under it, attributes included;
  // missing parents of dst_path are created, an existing dst_path is an error.
  void copy_from(const H5File& src, const std::string& src_path, const std::string& dst_path);

  void flush();
  // Closes the file and every object HDF5 still has open in it; later calls throw. Idempotent.
  void close();

 private:
  struct Impl;
  H5File(std::unique_ptr<Impl> impl, std::string path);
  Impl& impl(const char* op) const;  // vlm::Error if closed
  void close_quietly() noexcept;      // for the destructor and move assignment

  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// Builds the file via `fill` in memory, then writes its bytes with write_file_atomically (lib/io/
// durable.h): a temporary of a unique name created exclusively beside `path` (never through a
// symbolic link), fsynced, renamed over `path`, the directory fsynced. A reader, or a crash at any
// moment, sees either the old complete file or the new complete one. If `fill` throws or the disk
// fails (full, read-only), `path` is untouched, no temporary is left, and a vlm::Error names `path`
// and the cause. Callers that must not interleave (the results file) hold a lock (results.h).
void write_atomically(const std::string& path, const std::function<void(H5File&)>& fill);

}  // namespace vlm::io
