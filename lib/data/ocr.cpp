// OCR: a string of k characters (digits and capitals, k uniform in [min_length, max_length]) drawn in
// black with the 5x7 bitmap font on a white canvas of varying shape.
//
// Drawing, in order: k; the canvas height H uniform in [min_height, max_height]; the width W uniform
// in [max(H, w1 + 2), floor(H * max_aspect)] where w1 = 6k - 1 is the text's width at scale 1 (so the
// aspect ratio W/H lies in [1, max_aspect]); the scale s uniform in [1, s_max], the largest scale at
// which the text (s * w1 wide, 7s tall) fits inside a 1-pixel blank border; the top-left corner
// uniform over the positions that keep it inside that border. make_task refuses settings where the
// longest string cannot fit the narrowest canvas (6 max_length + 1 > min_height * max_aspect).
//
// Questions:
//   read     <image> what is the text ?          [the k characters, one token each]
//   char_at  <image> what is character i ?      [one character; i is 1-based, uniform in 1..k]
#include <algorithm>
#include <cmath>

#include "lib/data/draw.h"
#include "lib/data/task_common.h"

namespace vlm::data::detail {

namespace {

const std::vector<std::string> kSubtypes = {"read", "char_at"};
constexpr std::string_view kAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr Rgb kInk{0, 0, 0};

class Ocr final : public Task {
 public:
  explicit Ocr(const Params& p)
      : seed_(param_int(p, "seed")),
        min_length_(param_int(p, "min_length")),
        max_length_(param_int(p, "max_length")),
        min_height_(param_int(p, "min_height")),
        max_height_(param_int(p, "max_height")),
        max_aspect_(param_double(p, "max_aspect")) {
    VLM_TASK_CONFIG_CHECK(min_length_ <= max_length_,
              "task ocr: min_length = " << min_length_ << " exceeds max_length = " << max_length_);
    VLM_TASK_CONFIG_CHECK(min_height_ <= max_height_,
              "task ocr: min_height = " << min_height_ << " exceeds max_height = " << max_height_);
    VLM_TASK_CONFIG_CHECK(text_width(max_length_, 1) + 2 <= max_width(min_height_),
              "task ocr: max_length = " << max_length_ << " characters (" << text_width(max_length_, 1) + 2
                                   << " px wide with the border) do not fit min_height = " << min_height_
                                   << " x max_aspect = " << max_aspect_ << " ("
                                   << max_width(min_height_) << " px); lower max_length or raise min_height "
                                                                "or max_aspect");
  }

  std::string name() const override { return "ocr"; }

  Sample description(Split split, uint64_t index) const override {
    Sample s;
    Rng rng(stream_seed(seed_, split, index));
    for (const char c : scene(split, rng, s)) s.answer.emplace_back(1, c);
    return s;
  }
  std::vector<std::string> description_words() const override {
    std::vector<std::string> v;
    for (const char c : kAlphabet) add_words(v, {std::string(1, c)});
    return v;
  }
  int max_description_tokens() const override { return static_cast<int>(max_length_); }

  Sample sample(Split split, uint64_t index) const override {
    Rng rng(stream_seed(seed_, split, index));
    Sample s;
    const std::string text = scene(split, rng, s);

    if (s.subtype == kSubtypes[0]) {
      s.prompt = {kImageWord, "what", "is", "the", "text", "?"};
      for (char c : text) s.answer.emplace_back(1, c);
    } else {
      const int64_t i = rng.below(static_cast<int64_t>(text.size()));
      s.prompt = {kImageWord, "what", "is", "character", number_word(i + 1), "?"};
      s.answer = {std::string(1, text[static_cast<std::size_t>(i)])};
    }
    return s;
  }

  std::vector<std::string> subtypes() const override { return kSubtypes; }

  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v;
    add_words(v, {"what", "is", "the", "text", "?", "character"});
    for (char c : kAlphabet) add_words(v, {std::string(1, c)});
    for (int64_t i = 1; i <= max_length_; ++i) add_words(v, {number_word(i)});
    return v;
  }

  double chance(const std::string& subtype) const override {
    VLM_CHECK(subtype == "read" || subtype == "char_at", "ocr: unknown subtype '" << subtype << "'");
    const double n = static_cast<double>(kAlphabet.size());
    if (subtype == "char_at") return 1.0 / n;
    double strings = 0;  // possible answers: every string of every allowed length
    for (int64_t k = min_length_; k <= max_length_; ++k) strings += std::pow(n, static_cast<double>(k));
    return 1.0 / strings;
  }
  std::vector<std::string> metrics() const override { return {"cer", "char_accuracy", "exact_match"}; }
  int max_answer_tokens() const override { return static_cast<int>(max_length_); }
  int max_images() const override { return 1; }
  std::pair<int64_t, int64_t> max_image_size() const override { return {max_height_, max_width(max_height_)}; }

 private:
  // The kind draw, then the string and its canvas (into s.images, s.subtype's kind); the string.
  std::string scene(Split split, Rng& rng, Sample& s) const {
    const int kind = static_cast<int>(rng.below(2));
    s.subtype = kSubtypes[static_cast<std::size_t>(kind)];
    std::string text;
    do {
      const int64_t k = min_length_ + rng.below(max_length_ - min_length_ + 1);
      text.clear();
      const int64_t n_chars = static_cast<int64_t>(kAlphabet.size());
      for (int64_t j = 0; j < k; ++j) text += kAlphabet[static_cast<std::size_t>(rng.below(n_chars))];
      const int64_t h = min_height_ + rng.below(max_height_ - min_height_ + 1);
      const int64_t w1 = text_width(k, 1);
      const int64_t w_lo = std::max(h, w1 + 2), w_hi = max_width(h);
      const int64_t w = w_lo + rng.below(w_hi - w_lo + 1);
      const int64_t s_max = std::min((w - 2) / w1, (h - 2) / kGlyphHeight);
      const int64_t scale = 1 + rng.below(s_max);
      const int64_t x0 = 1 + rng.below(w - 2 - scale * w1 + 1);
      const int64_t y0 = 1 + rng.below(h - 2 - scale * kGlyphHeight + 1);
      Image img(h, w, kWhite);
      draw_text(img, text, y0, x0, scale, kInk);
      s.images.assign(1, std::move(img));
    } while (!in_split(s.images, split));
    return text;
  }

  int64_t max_width(int64_t h) const {
    // The small epsilon keeps e.g. 12 x 8.0 at 96 against floating-point noise in max_aspect.
    return static_cast<int64_t>(std::floor(static_cast<double>(h) * max_aspect_ + 1e-9));
  }

  int64_t seed_, min_length_, max_length_, min_height_, max_height_;
  double max_aspect_;
};

}  // namespace

TaskInfo ocr_info() {
  return {"ocr",
          "read a string of digits and capitals (bitmap font, random scale and offset) on canvases of "
          "aspect 1:1 to 1:max_aspect, or name its i-th character",
          {seed_param(),
           {"min_length", int64_t{3}, 1, 32, {}, "fewest characters in a string"},
           {"max_length", int64_t{6}, 1, 32, {}, "most characters in a string (= max answer tokens)"},
           {"min_height", int64_t{12}, 9, 512, {}, "smallest canvas height in pixels (the font is 7 px tall)"},
           {"max_height", int64_t{32}, 9, 512, {}, "largest canvas height in pixels"},
           {"max_aspect", 8.0, 1.0, 16.0, {}, "largest width/height ratio of a canvas (integers accepted)"}}};
}

std::unique_ptr<Task> make_ocr(const Params& p) { return std::make_unique<Ocr>(p); }

}  // namespace vlm::data::detail
