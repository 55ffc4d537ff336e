// lib/io/h5: tables, sample arrays, attributes and groups round trip; copy between files; atomic
// replacement; clear errors naming the file and object; and the files read into pandas via h5py.
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "lib/io/h5.h"

namespace fs = std::filesystem;
using Catch::Contains;
using vlm::io::AttrValue;
using vlm::io::H5File;
using vlm::io::Table;

namespace {

// A scratch directory removed when the test ends; random so concurrent runs (build/ and
// build-asan/, other engineers) never share files.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    std::ostringstream name;
    name << "vlm_h5_test_" << rd() << '_' << rd();
    path_ = fs::temp_directory_path() / name.str();
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

// Non-ASCII on purpose: 2-, 3- and 4-byte UTF-8 sequences.
const std::string kUtf8 = "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80";

Table sample_table() {
  Table t;
  t.add_ints("id", {0, -1, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()})
      .add_doubles("latency_ms", {1.5, -0.0, 1e-300, std::numeric_limits<double>::infinity()})
      .add_strings("name", {"plain", "", kUtf8, "with \"quotes\", commas\nand a newline"});
  return t;
}

void check_same(const Table& a, const Table& b) {
  REQUIRE(a.columns.size() == b.columns.size());
  for (std::size_t j = 0; j < a.columns.size(); ++j) {
    CHECK(a.columns[j].name == b.columns[j].name);
    CHECK(a.columns[j].values.index() == b.columns[j].values.index());
  }
  CHECK(a.rows() == b.rows());
  for (const auto& c : a.columns) {
    const auto& d = b.at(c.name);
    switch (c.values.index()) {
      case 0:
        CHECK(c.ints() == d.ints());
        break;
      case 1:
        // Bitwise: -0.0 and inf must survive, which == on doubles would not show.
        REQUIRE(c.doubles().size() == d.doubles().size());
        for (std::size_t i = 0; i < c.doubles().size(); ++i) {
          CHECK(std::signbit(c.doubles()[i]) == std::signbit(d.doubles()[i]));
          CHECK(c.doubles()[i] == d.doubles()[i]);
        }
        break;
      default:
        CHECK(c.strings() == d.strings());
    }
  }
}

// Exit status of a shell command, or -1 if it did not exit normally.
int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

// tests/io/h5_pandas_check.py next to this file; meson may compile it by a build-relative path,
// so the test-data root (tests/data, set by tests/meson.build) is the fallback.
std::string pandas_check_script() {
  std::vector<fs::path> candidates{fs::path(__FILE__).parent_path() / "h5_pandas_check.py"};
  if (const char* root = std::getenv("VLM_TEST_DATA")) {
    candidates.push_back(fs::path(root).parent_path() / "io" / "h5_pandas_check.py");
  }
  for (const auto& c : candidates) {
    if (fs::exists(c)) return fs::absolute(c).string();
  }
  return "";
}

}  // namespace

TEST_CASE("a table with int64, double and UTF-8 string columns round trips", "[io][h5]") {
  TempDir dir;
  const std::string path = dir.file("t.h5");
  const Table t = sample_table();
  Table empty;
  empty.add_ints("n", {}).add_doubles("x", {}).add_strings("s", {});
  {
    H5File f = H5File::create(path);
    f.write_table("/summary", t);
    f.write_table("/runs/a/empty", empty);  // parents are created
    f.write_doubles("/runs/a/samples", {0.25, 3.0, -7.5});
    f.write_doubles("/runs/a/no_samples", {});
    f.close();
  }
  H5File f = H5File::open_read(path);
  check_same(t, f.read_table("/summary"));
  check_same(t, f.read_table("summary"));  // relative paths are from the root

  const Table e = f.read_table("/runs/a/empty");
  CHECK(e.rows() == 0);
  check_same(empty, e);

  CHECK(f.read_doubles("/runs/a/samples") == std::vector<double>{0.25, 3.0, -7.5});
  CHECK(f.read_doubles("/runs/a/no_samples").empty());
}

TEST_CASE("attributes of each type on the root, a group and a dataset", "[io][h5]") {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  {
    H5File f = H5File::create(path);
    f.make_groups("/runs/abc");
    f.write_doubles("/runs/abc/samples", {1.0});
    for (const std::string obj : {"/", "/runs/abc", "/runs/abc/samples"}) {
      f.set_attr(obj, "count", int64_t{-42});
      f.set_attr(obj, "ratio", 0.125);
      f.set_attr(obj, "label", kUtf8);
      f.set_attr(obj, "empty", std::string());
    }
    // Replacing an attribute may change its type.
    f.set_attr("/", "count", std::string("many"));
    f.close();
  }
  H5File f = H5File::open_read(path);
  CHECK(f.attr("/", "count") == AttrValue(std::string("many")));
  for (const std::string obj : {"/runs/abc", "/runs/abc/samples"}) {
    INFO(obj);
    CHECK(f.attr(obj, "count") == AttrValue(int64_t{-42}));
    CHECK(f.attr(obj, "ratio") == AttrValue(0.125));
    CHECK(f.attr(obj, "label") == AttrValue(kUtf8));
    CHECK(f.attr(obj, "empty") == AttrValue(std::string()));
  }
  const auto all = f.attrs("/runs/abc/samples");
  CHECK(all.size() == 4);
  CHECK(all.at("ratio") == AttrValue(0.125));
  CHECK(f.attrs("/runs").empty());

  CHECK_THROWS_WITH(f.attr("/runs/abc", "nope"),
                    Contains(path) && Contains("/runs/abc") && Contains("nope"));
  CHECK_THROWS_WITH(f.attr("/runs/zzz", "count"), Contains(path) && Contains("/runs/zzz"));
}

TEST_CASE("groups: make_groups, children, exists", "[io][h5]") {
  TempDir dir;
  const std::string path = dir.file("g.h5");
  H5File f = H5File::create(path);
  f.make_groups("/runs/b");
  f.make_groups("/runs/a/deep/er");
  f.make_groups("/runs/b");  // idempotent, like mkdir -p
  f.write_doubles("/runs/c", {1.0});
  CHECK(f.children("/") == std::vector<std::string>{"runs"});
  CHECK(f.children("/runs") == std::vector<std::string>{"a", "b", "c"});
  CHECK(f.children("/runs/b").empty());
  CHECK(f.exists("/"));
  CHECK(f.exists("/runs/a/deep/er"));
  CHECK(f.exists("runs/c"));
  CHECK_FALSE(f.exists("/runs/x"));
  CHECK_FALSE(f.exists("/nope/x/y"));
  CHECK_FALSE(f.exists("/runs/c/below_a_dataset"));
  CHECK_THROWS_WITH(f.make_groups("/runs/c/x"), Contains(path) && Contains("/runs/c"));
  CHECK_THROWS_WITH(f.children("/runs/c"), Contains("/runs/c") && Contains("not a group"));
  CHECK_THROWS_WITH(f.children("/missing"), Contains("/missing"));
}

TEST_CASE("copy_from deep-copies a group with its tables and attributes", "[io][h5]") {
  TempDir dir;
  const std::string src_path = dir.file("src.h5");
  const std::string dst_path = dir.file("dst.h5");
  {
    H5File src = H5File::create(src_path);
    src.write_table("/runs/r1/summary", sample_table());
    src.write_doubles("/runs/r1/raw/latency", {1.0, 2.0});
    src.set_attr("/runs/r1", "model", kUtf8);
    src.set_attr("/runs/r1/summary", "rows", int64_t{4});
    src.set_attr("/runs/r1/raw", "unit", std::string("ms"));
    src.close();
  }
  {
    const H5File src = H5File::open_read(src_path);
    H5File dst = H5File::create(dst_path);
    dst.copy_from(src, "/runs/r1", "/all/runs/r1");
    CHECK_THROWS_WITH(dst.copy_from(src, "/runs/r1", "/all/runs/r1"),
                      Contains(dst_path) && Contains("already exists"));
    CHECK_THROWS_WITH(dst.copy_from(src, "/runs/missing", "/x"),
                      Contains(src_path) && Contains("/runs/missing"));
    dst.close();
  }
  // The source may now be gone: the copy is deep, not a link.
  fs::remove(src_path);
  const H5File dst = H5File::open_read(dst_path);
  CHECK(dst.children("/all/runs/r1") == std::vector<std::string>{"raw", "summary"});
  check_same(sample_table(), dst.read_table("/all/runs/r1/summary"));
  CHECK(dst.read_doubles("/all/runs/r1/raw/latency") == std::vector<double>{1.0, 2.0});
  CHECK(dst.attr("/all/runs/r1", "model") == AttrValue(kUtf8));
  CHECK(dst.attr("/all/runs/r1/summary", "rows") == AttrValue(int64_t{4}));
  CHECK(dst.attr("/all/runs/r1/raw", "unit") == AttrValue(std::string("ms")));
}

TEST_CASE("write_atomically replaces the file only when fill succeeds", "[io][h5]") {
  TempDir dir;
  const std::string path = dir.file("results.h5");

  vlm::io::write_atomically(path, [](H5File& f) { f.set_attr("/", "version", int64_t{1}); });
  CHECK(H5File::open_read(path).attr("/", "version") == AttrValue(int64_t{1}));
  CHECK(dir.entries() == std::vector<std::string>{"results.h5"});

  CHECK_THROWS_WITH(vlm::io::write_atomically(path,
                                              [](H5File& f) {
                                                f.set_attr("/", "version", int64_t{2});
                                                f.write_doubles("/half", {1.0});
                                                throw std::runtime_error("fill failed midway");
                                              }),
                    "fill failed midway");
  // The old file is intact and the partial .tmp is gone.
  {
    const H5File f = H5File::open_read(path);
    CHECK(f.attr("/", "version") == AttrValue(int64_t{1}));
    CHECK_FALSE(f.exists("/half"));
  }
  CHECK(dir.entries() == std::vector<std::string>{"results.h5"});

  // A vlm::Error from the layer itself inside fill behaves the same.
  CHECK_THROWS_AS(vlm::io::write_atomically(path,
                                            [](H5File& f) { (void)f.read_doubles("/missing"); }),
                  vlm::Error);
  CHECK(dir.entries() == std::vector<std::string>{"results.h5"});

  // The file is built in memory and imaged when fill returns: closing it inside fill is an error, and
  // the old file stays.
  CHECK_THROWS_WITH(vlm::io::write_atomically(path,
                                              [](H5File& f) {
                                                f.set_attr("/", "version", int64_t{9});
                                                f.close();
                                              }),
                    Contains(path) && Contains("closed before it was written"));
  CHECK(H5File::open_read(path).attr("/", "version") == AttrValue(int64_t{1}));

  // A symbolic link where older versions put their temporary (PATH.tmp) is neither followed nor
  // written through: the temporary's name is unique and created exclusively.
  const std::string victim = dir.file("victim.txt");
  std::ofstream(victim) << "precious";
  std::filesystem::create_symlink(victim, dir.file("results.h5.tmp"));
  vlm::io::write_atomically(path, [](H5File& f) { f.set_attr("/", "version", int64_t{3}); });
  CHECK(H5File::open_read(path).attr("/", "version") == AttrValue(int64_t{3}));
  CHECK_FALSE(std::filesystem::is_symlink(path));
  std::string content;
  std::getline(std::ifstream(victim), content);
  CHECK(content == "precious");
  CHECK(dir.entries() == std::vector<std::string>{"results.h5", "results.h5.tmp", "victim.txt"});

  // A folder that is not there: an error naming the file, nothing written.
  CHECK_THROWS_WITH(vlm::io::write_atomically(dir.file("no_dir/r.h5"),
                                              [](H5File& f) { f.set_attr("/", "v", int64_t{1}); }),
                    Contains("no_dir/r.h5") && Contains("cannot write"));
}

TEST_CASE("errors are vlm::Errors naming the file and the object", "[io][h5]") {
  TempDir dir;
  const std::string text = dir.file("not_hdf5.h5");
  std::ofstream(text) << "this is not an HDF5 file\n";
  CHECK_THROWS_AS(H5File::open_read(text), vlm::Error);
  CHECK_THROWS_WITH(H5File::open_read(text), Contains(text) && Contains("not an HDF5 file"));
  const std::string missing = dir.file("missing.h5");
  CHECK_THROWS_WITH(H5File::open_read(missing), Contains(missing) && Contains("no such file"));
  CHECK_THROWS_WITH(H5File::create(dir.file("no_dir/x.h5")),
                    Contains("no_dir/x.h5") && Contains("creating"));

  const std::string path = dir.file("e.h5");
  H5File f = H5File::create(path);
  f.write_table("/t", sample_table());
  f.write_doubles("/d", {1.0});

  CHECK_THROWS_WITH(f.read_table("/nope"), Contains(path) && Contains("/nope"));
  CHECK_THROWS_WITH(f.read_doubles("/runs/nope"), Contains(path) && Contains("/runs/nope"));
  CHECK_THROWS_WITH(f.read_table("/d"), Contains(path) && Contains("/d") && Contains("not a table"));
  CHECK_THROWS_WITH(f.read_doubles("/t"), Contains("/t") && Contains("not a floating-point"));
  CHECK_THROWS_WITH(f.read_doubles("/"), Contains("not a dataset"));
  CHECK_THROWS_WITH(f.read_table("/t").at("name").ints(),
                    Contains("name") && Contains("string") && Contains("int64"));
  CHECK_THROWS_WITH(f.read_table("/t").at("nope"), Contains("nope"));

  CHECK_THROWS_WITH(f.write_doubles("/d", {2.0}), Contains("/d") && Contains("already exists"));
  CHECK_THROWS_WITH(f.write_table("/t2", Table{}), Contains("/t2") && Contains("column"));
  Table ragged;
  ragged.add_ints("a", {1, 2}).add_doubles("b", {1.0});
  CHECK_THROWS_WITH(f.write_table("/t3", ragged), Contains("/t3") && Contains("\"b\" has 1 rows"));
  Table dup;
  dup.add_ints("a", {1}).add_ints("a", {2});
  CHECK_THROWS_WITH(f.write_table("/t4", dup), Contains("twice"));
  Table nul;
  nul.add_strings("s", {std::string("a\0b", 3)});
  CHECK_THROWS_WITH(f.write_table("/t5", nul), Contains("NUL"));
  CHECK_FALSE(f.exists("/t3"));

  f.close();
  f.close();  // idempotent
  CHECK_THROWS_WITH(f.exists("/t"), Contains(path) && Contains("closed"));

  // Read-only really is read-only, and the failure says where.
  H5File r = H5File::open_read(path);
  CHECK_THROWS_WITH(r.write_doubles("/new", {1.0}), Contains(path) && Contains("/new"));
  CHECK_THROWS_WITH(r.set_attr("/", "x", int64_t{1}), Contains(path));
}

TEST_CASE("files read into pandas through h5py without help", "[io][h5][python]") {
  if (run("/usr/bin/python3 -c 'import h5py, pandas' >/dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 with h5py and pandas is not available");
    return;
  }
  const std::string script = pandas_check_script();
  REQUIRE_FALSE(script.empty());
  TempDir dir;
  const std::string path = dir.file("pandas.h5");
  vlm::io::write_atomically(path, [](H5File& f) {
    f.set_attr("/", "schema", std::string("vlmlab-test"));
    f.set_attr("/", "label", kUtf8);
    f.set_attr("/", "seed", int64_t{1234});
    f.set_attr("/", "scale", 0.5);
    f.write_table("/summary", sample_table());
    Table empty;
    empty.add_ints("id", {}).add_doubles("latency_ms", {}).add_strings("name", {});
    f.write_table("/empty", empty);
    f.write_doubles("/runs/r1/samples", {0.5, 1.5, 2.5});
  });
  std::ostringstream cmd;
  cmd << "/usr/bin/python3 '" << script << "' '" << path << "'";
  CHECK(run(cmd.str()) == 0);
}
