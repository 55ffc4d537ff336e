// Files written so that a crash, a kill or a full disk at any moment leaves either the old file or
// the new one whole, never a mix and never a stray temporary.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vlm::io {

// Writes `bytes` to a temporary file created exclusively beside `path` (a unique name, never
// following a symbolic link), flushes it to disk, renames it over `path` and flushes the directory.
// On any failure the temporary is removed, `path` is left as it was, and a vlm::Error names `path`
// and the cause (e.g. "No space left on device"). `pause_point` (tests only): a test_pause_point()
// reached when half the bytes are written.
void write_file_atomically(const std::string& path, std::span<const std::uint8_t> bytes,
                           const std::string& pause_point = "");
void write_file_atomically(const std::string& path, const std::string& text, const std::string& pause_point = "");

// A name for a temporary file beside `path`, unique to this process and call, ending in ".tmp".
std::string temp_path_beside(const std::string& path);

// Flushes the directory holding `path`, so a rename into it survives a power cut.
void sync_parent_dir(const std::string& path);

}  // namespace vlm::io
