#include "lib/data/image.h"

namespace vlm::data {

Image::Image(int64_t h, int64_t w, Rgb fill) : height(h), width(w) {
  VLM_CHECK(h > 0 && w > 0, "image: size " << h << "x" << w << " must be positive");
  pixels.resize(static_cast<std::size_t>(h * w * 3));
  for (std::size_t i = 0; i < pixels.size(); i += 3) {
    pixels[i] = fill.r;
    pixels[i + 1] = fill.g;
    pixels[i + 2] = fill.b;
  }
}

Rgb Image::at(int64_t y, int64_t x) const {
  VLM_CHECK(contains(y, x), "image: pixel (" << y << ", " << x << ") is outside " << height << "x" << width);
  const std::size_t i = static_cast<std::size_t>((y * width + x) * 3);
  return {pixels[i], pixels[i + 1], pixels[i + 2]};
}

void Image::set(int64_t y, int64_t x, Rgb c) {
  if (!contains(y, x)) return;
  const std::size_t i = static_cast<std::size_t>((y * width + x) * 3);
  pixels[i] = c.r;
  pixels[i + 1] = c.g;
  pixels[i + 2] = c.b;
}

}  // namespace vlm::data
