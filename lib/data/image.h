// Images as tasks make them and processors read them: 8-bit RGB, row-major HWC.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/core/check.h"

namespace vlm::data {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [height][width][3]

  Image() = default;
  Image(int64_t h, int64_t w, Rgb fill = {255, 255, 255});

  bool contains(int64_t y, int64_t x) const { return y >= 0 && y < height && x >= 0 && x < width; }
  Rgb at(int64_t y, int64_t x) const;
  void set(int64_t y, int64_t x, Rgb c);  // ignores pixels outside the image (shapes may be clipped)
  friend bool operator==(const Image&, const Image&) = default;
};

}  // namespace vlm::data
