#include "lib/io/durable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "lib/core/check.h"
#include "lib/core/test_hook.h"

namespace vlm::io {

std::string temp_path_beside(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + "." + std::to_string(getpid()) + "." + std::to_string(counter++) + ".tmp";
}

void sync_parent_dir(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the rename itself has happened
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomically(const std::string& path, std::span<const std::uint8_t> bytes,
                           const std::string& pause_point) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = temp_path_beside(path);
    // O_EXCL with O_CREAT never follows a symbolic link at tmp: an existing name fails instead.
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw Error("cannot write " + path + ": cannot create a temporary file beside it: " + std::strerror(errno));
  const auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + what + ": " + std::strerror(err));
  };
  std::size_t done = 0;
  const std::size_t half = bytes.size() / 2;
  bool paused = pause_point.empty() || !test_pauses_enabled();
  while (done < bytes.size()) {
    std::size_t chunk = bytes.size() - done;
    if (!paused) chunk = std::min(chunk, half - std::min(half, done));
    if (chunk > 0) {
      const ssize_t n = ::write(fd, bytes.data() + done, chunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write");
      }
      done += static_cast<std::size_t>(n);
    }
    if (!paused && done >= half) {
      paused = true;
      test_pause_point(pause_point);
    }
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": close: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": rename: " + std::strerror(err));
  }
  sync_parent_dir(path);
}

void write_file_atomically(const std::string& path, const std::string& text, const std::string& pause_point) {
  write_file_atomically(
      path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), pause_point);
}

}  // namespace vlm::io
