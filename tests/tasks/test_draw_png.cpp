// Tests for lib/data/draw and lib/data/png: the exact pixel rules of squares and circles, the bitmap
// font, and PNG files that read back bit for bit.
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>

#include "lib/core/random.h"
#include "lib/data/draw.h"
#include "lib/data/png.h"
#include "lib/data/task.h"

namespace vlm::data {
namespace {

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kRed{255, 0, 0};
constexpr Rgb kBlack{0, 0, 0};

int64_t count_color(const Image& img, Rgb c) {
  int64_t n = 0;
  for (int64_t y = 0; y < img.height; ++y)
    for (int64_t x = 0; x < img.width; ++x) n += img.at(y, x) == c;
  return n;
}

std::string temp_path(const std::string& name) {
  std::ostringstream os;
  os << "vlmlab_test_" << getpid() << "_" << name;
  return (std::filesystem::temp_directory_path() / os.str()).string();
}

}  // namespace

TEST_CASE("fill_circle covers exactly the pixels with (x-cx)^2 + (y-cy)^2 <= r^2", "[draw]") {
  for (int64_t r : {1, 3, 5, 10}) {
    Image img(40, 40);
    fill_circle(img, 20, 17, r, kRed);
    int64_t expected = 0;
    for (int64_t y = 0; y < 40; ++y)
      for (int64_t x = 0; x < 40; ++x) {
        const bool inside = (x - 17) * (x - 17) + (y - 20) * (y - 20) <= r * r;
        expected += inside;
        REQUIRE((img.at(y, x) == kRed) == inside);
      }
    REQUIRE(count_color(img, kRed) == expected);
  }
  Image img(20, 20);
  fill_circle(img, 10, 10, 5, kRed);
  REQUIRE(count_color(img, kRed) == 81);  // Sort-of-CLEVR's circle: 81 pixels against the square's 100
  // Clipped at the border instead of wrapping or failing.
  Image corner(10, 10);
  fill_circle(corner, 0, 0, 3, kRed);
  REQUIRE(count_color(corner, kRed) == 11);  // the quarter disc with its two edges
}

TEST_CASE("fill_square of side s covers cx - s/2 <= x < cx - s/2 + s", "[draw]") {
  Image even(30, 30);
  fill_square(even, 12, 15, 10, kRed);
  REQUIRE(count_color(even, kRed) == 100);
  REQUIRE(even.at(7, 10) == kRed);     // (cy-5, cx-5)
  REQUIRE(even.at(16, 19) == kRed);    // (cy+4, cx+4)
  REQUIRE(even.at(17, 15) == kWhite);  // cy+5 is outside
  REQUIRE(even.at(12, 20) == kWhite);  // cx+5 is outside
  Image odd(30, 30);
  fill_square(odd, 12, 15, 11, kRed);
  REQUIRE(count_color(odd, kRed) == 121);
  REQUIRE(odd.at(17, 20) == kRed);  // side 11: [cx-5, cx+5] inclusive
  REQUIRE(odd.at(6, 15) == kWhite);
  Image clipped(10, 10);
  fill_rect(clipped, -3, 8, 5, 5, kRed);
  REQUIRE(count_color(clipped, kRed) == 4);
}

TEST_CASE("font: 36 distinct digit and capital glyphs spanning all 7 rows; lowercase drawn as capitals",
          "[draw][font]") {
  const std::string alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::set<std::array<uint8_t, kGlyphHeight>> seen;
  for (char c : alnum) {
    const auto* g = glyph(c);
    REQUIRE(g != nullptr);
    REQUIRE((*g)[0] != 0);  // ink in the top row and the bottom row: text height is 7 x scale
    REQUIRE((*g)[kGlyphHeight - 1] != 0);
    for (uint8_t row : *g) REQUIRE(row < 32);  // 5 columns
    seen.insert(*g);
  }
  REQUIRE(seen.size() == alnum.size());
  REQUIRE(glyph('q') == glyph('Q'));
  for (char c : std::string("?.:-_<>()' "))
    REQUIRE(glyph(c) != nullptr);
  REQUIRE(glyph('~') == nullptr);
  Image unknown(7, 5), question(7, 5);
  draw_char(unknown, '~', 0, 0, 1, kBlack);
  draw_char(question, '?', 0, 0, 1, kBlack);
  REQUIRE(unknown == question);
}

TEST_CASE("draw_text: glyph pixels become scale x scale blocks, characters 6 x scale apart", "[draw][font]") {
  REQUIRE(text_width(0, 3) == 0);
  REQUIRE(text_width(1, 1) == 5);
  REQUIRE(text_width(4, 3) == 3 * 23);
  const int64_t s = 3, y0 = 2, x0 = 4;
  Image img(30, 50);
  draw_text(img, "L7", y0, x0, s, kBlack);
  for (int64_t y = 0; y < img.height; ++y)
    for (int64_t x = 0; x < img.width; ++x) {
      bool ink = false;
      const int64_t row = (y - y0) / s, col = (x - x0) / s;
      if (y >= y0 && x >= x0 && row < kGlyphHeight && col < 2 * kGlyphAdvance) {
        const char c = col < kGlyphAdvance ? 'L' : '7';
        const int64_t gc = col % kGlyphAdvance;
        ink = gc < kGlyphWidth && (((*glyph(c))[static_cast<std::size_t>(row)] >> (kGlyphWidth - 1 - gc)) & 1);
      }
      REQUIRE((img.at(y, x) == kBlack) == ink);
    }
  // 'L' is its left column and its bottom row: 7 + 4 font pixels.
  Image l(7 * s, 5 * s);
  draw_char(l, 'L', 0, 0, s, kBlack);
  REQUIRE(count_color(l, kBlack) == 11 * s * s);
}

TEST_CASE("PNG: write then read gives back the same pixels", "[png]") {
  Rng rng(7);
  Image img(13, 7);
  for (uint8_t& p : img.pixels) p = static_cast<uint8_t>(rng.below(256));
  const std::string path = temp_path("roundtrip.png");
  write_png(path, img);
  const Image back = read_png(path);
  std::filesystem::remove(path);
  REQUIRE(back.height == 13);
  REQUIRE(back.width == 7);
  REQUIRE(back == img);
  REQUIRE_THROWS_WITH(read_png(path), Catch::Contains(path));
  REQUIRE_THROWS_WITH(write_png("/nonexistent-dir/x.png", img), Catch::Contains("/nonexistent-dir/x.png"));
}

TEST_CASE("write_sample_png: the images magnified side by side, the question and answer underneath", "[png]") {
  auto task = make_task("multi_image", {});
  Sample s;
  for (uint64_t i = 0; s.images.size() < 3; ++i) s = task->sample(Split::kTrain, i);
  const std::string path = temp_path("sample.png");
  write_sample_png(path, s);
  const Image out = read_png(path);
  std::filesystem::remove(path);
  REQUIRE(out == render_sample(s));

  // Find the magnification of the first image at the 8 px margin, then every image in turn.
  int64_t k = 0;
  for (int64_t cand = 1; cand <= 8 && k == 0; ++cand) {
    bool ok = true;
    for (int64_t y = 0; y < s.images[0].height * cand && ok; ++y)
      for (int64_t x = 0; x < s.images[0].width * cand && ok; ++x)
        ok = out.contains(8 + y, 8 + x) && out.at(8 + y, 8 + x) == s.images[0].at(y / cand, x / cand);
    if (ok) k = cand;
  }
  REQUIRE(k >= 2);  // 40 px scenes are shown larger
  int64_t x0 = 8;
  for (const Image& img : s.images) {
    for (int64_t y = 0; y < img.height * k; ++y)
      for (int64_t x = 0; x < img.width * k; ++x) REQUIRE(out.at(8 + y, x0 + x) == img.at(y / k, x / k));
    x0 += img.width * k + 8;
  }
  // Text (black ink) below the images, none of it above.
  int64_t ink_below = 0;
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x)
      if (out.at(y, x) == kBlack) {
        REQUIRE(y >= 8 + s.images[0].height * k);
        ++ink_below;
      }
  REQUIRE(ink_below > 500);
}

}  // namespace vlm::data
