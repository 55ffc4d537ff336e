// Drawing primitives for the generated tasks: filled squares and circles with exact pixel rules (so
// a test can recompute a scene from its pixels), and a built-in 5x7 bitmap font.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "lib/data/image.h"

namespace vlm::data {

// Fills the rectangle y0 <= y < y0 + h, x0 <= x < x0 + w (clipped to the image).
void fill_rect(Image& img, int64_t y0, int64_t x0, int64_t h, int64_t w, Rgb c);

// Filled square of side `side` around (cy, cx): cx - side/2 <= x < cx - side/2 + side (integer
// division), the same for y. Side 10 covers [cx-5, cx+5); side 11 covers [cx-5, cx+5].
void fill_square(Image& img, int64_t cy, int64_t cx, int64_t side, Rgb c);

// Filled circle: every pixel with (x-cx)^2 + (y-cy)^2 <= r^2 (radius 5: 81 pixels).
void fill_circle(Image& img, int64_t cy, int64_t cx, int64_t r, Rgb c);

// The font: 5 columns x 7 rows per glyph, one column of spacing, so a character advances 6 columns.
// Digits and capitals A-Z (each has ink in its top and bottom row, so text height is exactly 7 x
// scale), lowercase drawn as capitals, a space, and punctuation for captions: ? . , : ; - _ / < > '
// = ( ) [ ] ! + * #. Anything else is drawn as '?'.
inline constexpr int64_t kGlyphWidth = 5;
inline constexpr int64_t kGlyphHeight = 7;
inline constexpr int64_t kGlyphAdvance = 6;

// Rows top to bottom; bit 4 of a row is the leftmost column. Null if the font has no glyph for c
// (lowercase letters map to their capitals).
const std::array<uint8_t, kGlyphHeight>* glyph(char c);

// Width in pixels of n characters at `scale` (no trailing spacing): scale * (6n - 1); 0 for n = 0.
int64_t text_width(int64_t n, int64_t scale);

// Draws one character with its top-left corner at (y, x), each font pixel a scale x scale block.
void draw_char(Image& img, char c, int64_t y, int64_t x, int64_t scale, Rgb color);
// Draws `text` left to right from (y, x); character j starts at x + j * 6 * scale.
void draw_text(Image& img, std::string_view text, int64_t y, int64_t x, int64_t scale, Rgb color);

}  // namespace vlm::data
