#include "lib/data/png.h"

#include <png.h>

#include <algorithm>
#include <string_view>
#include <vector>

#include "lib/data/draw.h"

namespace vlm::data {

// libpng's "simplified" API (1.6+): no setjmp/longjmp error handling to get wrong; failures come
// back as a return value with a message in the png_image.

void write_png(const std::string& path, const Image& img) {
  VLM_CHECK(img.height > 0 && img.width > 0 &&
                img.pixels.size() == static_cast<std::size_t>(img.height * img.width * 3),
            "write_png " << path << ": image " << img.height << "x" << img.width << " with "
                         << img.pixels.size() << " bytes is not a valid RGB image");
  png_image im{};
  im.version = PNG_IMAGE_VERSION;
  im.width = static_cast<png_uint_32>(img.width);
  im.height = static_cast<png_uint_32>(img.height);
  im.format = PNG_FORMAT_RGB;
  const int ok = png_image_write_to_file(&im, path.c_str(), 0, img.pixels.data(),
                                         static_cast<png_int_32>(img.width * 3), nullptr);
  const std::string message = im.message;
  png_image_free(&im);
  VLM_CHECK(ok != 0, "write_png " << path << ": " << message);
}

Image read_png(const std::string& path) {
  png_image im{};
  im.version = PNG_IMAGE_VERSION;
  VLM_CHECK(png_image_begin_read_from_file(&im, path.c_str()) != 0,
            "read_png " << path << ": " << im.message);
  im.format = PNG_FORMAT_RGB;
  Image img(static_cast<int64_t>(im.height), static_cast<int64_t>(im.width));
  png_color white{255, 255, 255};
  const int ok = png_image_finish_read(&im, &white, img.pixels.data(),
                                       static_cast<png_int_32>(img.width * 3), nullptr);
  const std::string message = im.message;
  png_image_free(&im);
  VLM_CHECK(ok != 0, "read_png " << path << ": " << message);
  return img;
}

namespace {

constexpr int64_t kMargin = 8;
constexpr int64_t kTextScale = 2;
constexpr Rgb kBackground{200, 200, 200};  // not white, so a white image's edge shows
constexpr Rgb kInk{0, 0, 0};

// Nearest-neighbour magnification so that an image is at least ~96 px tall (at most x8).
int64_t magnification(const Image& img) {
  return std::clamp<int64_t>((96 + img.height - 1) / img.height, 1, 8);
}

// Greedy word wrap to at most `max_chars` characters a line.
std::vector<std::string> wrap(const std::string& label, const std::vector<std::string>& words,
                              std::size_t max_chars) {
  std::vector<std::string> lines;
  std::string line = label;
  for (const std::string& w : words) {
    if (line.size() + 1 + w.size() > max_chars && line.size() > label.size()) {
      lines.push_back(line);
      line = std::string(label.size(), ' ');
    }
    line += ' ';
    line += w;
  }
  lines.push_back(line);
  return lines;
}

}  // namespace

Image render_sample(const Sample& sample) {
  int64_t images_w = 0, images_h = 0;
  for (const Image& img : sample.images) {
    const int64_t k = magnification(img);
    images_w += img.width * k + (images_w > 0 ? kMargin : 0);
    images_h = std::max(images_h, img.height * k);
  }
  const int64_t char_w = kGlyphAdvance * kTextScale;
  const std::size_t max_chars =
      static_cast<std::size_t>(std::max<int64_t>(images_w, 60 * char_w) / char_w);
  std::vector<std::string> lines = wrap("Q:", sample.prompt, max_chars);
  for (const std::string& l : wrap("A:", sample.answer, max_chars)) lines.push_back(l);
  std::string subtype_line = "(";
  subtype_line += sample.subtype;
  subtype_line += ')';
  lines.push_back(subtype_line);

  int64_t text_w = 0;
  for (const std::string& l : lines)
    text_w = std::max(text_w, text_width(static_cast<int64_t>(l.size()), kTextScale));
  const int64_t line_h = (kGlyphHeight + 3) * kTextScale;
  const int64_t width = 2 * kMargin + std::max(images_w, text_w);
  const int64_t height = 3 * kMargin + images_h + line_h * static_cast<int64_t>(lines.size());
  Image out(height, width, kBackground);

  int64_t x0 = kMargin;
  for (const Image& img : sample.images) {
    const int64_t k = magnification(img);
    for (int64_t y = 0; y < img.height; ++y)
      for (int64_t x = 0; x < img.width; ++x)
        fill_rect(out, kMargin + y * k, x0 + x * k, k, k, img.at(y, x));
    x0 += img.width * k + kMargin;
  }
  int64_t y0 = 2 * kMargin + images_h;
  for (const std::string& l : lines) {
    draw_text(out, l, y0, kMargin, kTextScale, kInk);
    y0 += line_h;
  }
  return out;
}

void write_sample_png(const std::string& path, const Sample& sample) { write_png(path, render_sample(sample)); }

}  // namespace vlm::data
