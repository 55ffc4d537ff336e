// Multi-image: 2..max_images small Sort-of-CLEVR-like scenes, all given before the question.
//
// A scene: num_objects objects of distinct colours (a uniform random subset of the six, placed in a
// random order) with Sort-of-CLEVR's shapes, placement and pixel rules scaled to image_size
// (h = scaled_half(image_size): 3 at the default 40 px).
//
// Questions (n images, the number n uniform in [2, max_images], the subtype uniform):
//   more_circles  which image has more circles ?        (n = 2)   [first | second]
//                 which image has the most circles ?    (n > 2)   [first .. fourth]
//                 scenes are redrawn until one image has strictly the most circles.
//   colour        what colour is the S in the O image ?           [red .. yellow]
//                 S square or circle, O an ordinal; scenes redrawn until image O has exactly one S.
//   left_of       is the X object in image a left of the X object in image b ?   [yes | no]
//                 a != b (digits 1..n), both images contain X (a colour); yes iff cx_a < cx_b,
//                 scenes redrawn while cx_a == cx_b.
// The question (n, subtype, S, O, X, a, b) is drawn before the scenes, so redraws do not bias it.
#include <algorithm>

#include "lib/data/task_common.h"

namespace vlm::data::detail {

namespace {

const std::vector<std::string> kSubtypes = {"more_circles", "colour", "left_of"};

class MultiImage final : public Task {
 public:
  explicit MultiImage(const Params& p)
      : seed_(param_int(p, "seed")),
        size_(param_int(p, "image_size")),
        half_(scaled_half(size_)),
        max_images_(param_int(p, "max_images")),
        num_objects_(param_int(p, "num_objects")) {}

  std::string name() const override { return "multi_image"; }

  Sample sample(Split split, uint64_t index) const override { return generate(split, index, nullptr); }

  // Each image in order: its ordinal ("first"), then its objects.
  Sample description(Split split, uint64_t index) const override {
    std::vector<std::vector<SceneObject>> scenes;
    Sample s = generate(split, index, &scenes);
    s.answer.clear();
    for (std::size_t i = 0; i < scenes.size(); ++i) {
      s.answer.emplace_back(kOrdinals[i]);
      for (std::string& w : describe_objects(scenes[i], size_)) s.answer.push_back(std::move(w));
    }
    return s;
  }
  std::vector<std::string> description_words() const override {
    std::vector<std::string> v;
    for (int64_t i = 0; i < max_images_; ++i) add_words(v, {kOrdinals[static_cast<std::size_t>(i)]});
    add_words(v, object_description_words());
    return v;
  }
  int max_description_tokens() const override { return static_cast<int>(max_images_ * (1 + 4 * num_objects_)); }

 private:
  // The sample, and its scenes' objects in *scenes_out where given.
  Sample generate(Split split, uint64_t index, std::vector<std::vector<SceneObject>>* scenes_out) const {
    Rng rng(stream_seed(seed_, split, index));
    const int64_t n = 2 + rng.below(max_images_ - 1);
    const int kind = static_cast<int>(rng.below(3));
    const Shape shape = rng.below(2) == 0 ? Shape::kSquare : Shape::kCircle;
    const int64_t target = rng.below(n);  // colour: the image asked about
    const int color = static_cast<int>(rng.below(kNumColors));
    const int64_t a = rng.below(n);
    int64_t b = rng.below(n - 1);
    if (b >= a) ++b;

    Sample s;
    s.subtype = kSubtypes[static_cast<std::size_t>(kind)];
    std::vector<std::vector<SceneObject>> scenes(static_cast<std::size_t>(n));
    std::string answer;
    for (;;) {
      for (int64_t i = 0; i < n; ++i) {
        const bool needs_color = kind == 2 && (i == a || i == b);
        scenes[static_cast<std::size_t>(i)] = scene(rng, needs_color ? color : -1);
      }
      answer = answer_of(kind, scenes, shape, target, color, a, b);
      if (answer.empty()) continue;
      s.images.clear();
      for (const auto& objects : scenes) s.images.push_back(draw_objects(objects, size_, half_));
      if (in_split(s.images, split)) break;
    }

    s.prompt.assign(static_cast<std::size_t>(n), kImageWord);
    const std::string color_word = kColors[static_cast<std::size_t>(color)].name;
    if (kind == 0 && n == 2) {
      for (const char* w : {"which", "image", "has", "more", "circles", "?"}) s.prompt.emplace_back(w);
    } else if (kind == 0) {
      for (const char* w : {"which", "image", "has", "the", "most", "circles", "?"}) s.prompt.emplace_back(w);
    } else if (kind == 1) {
      for (const char* w : {"what", "colour", "is", "the", shape_word(shape), "in", "the",
                            kOrdinals[static_cast<std::size_t>(target)], "image", "?"})
        s.prompt.emplace_back(w);
    } else {
      const std::string wa = number_word(a + 1), wb = number_word(b + 1);
      for (const std::string& w : {std::string("is"), std::string("the"), color_word, std::string("object"),
                                   std::string("in"), std::string("image"), wa, std::string("left"),
                                   std::string("of"), std::string("the"), color_word, std::string("object"),
                                   std::string("in"), std::string("image"), wb, std::string("?")})
        s.prompt.push_back(w);
    }
    s.answer = {answer};
    if (scenes_out) *scenes_out = std::move(scenes);
    return s;
  }

 public:
  std::vector<std::string> subtypes() const override { return kSubtypes; }

  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v;
    add_words(v, {"which", "image", "has", "more", "the", "most", "circles", "?", "what", "colour", "is",
                  "square", "circle", "in", "object", "left", "of"});
    for (int64_t i = 0; i < max_images_; ++i) add_words(v, {kOrdinals[static_cast<std::size_t>(i)]});
    for (int64_t i = 1; i <= max_images_; ++i) add_words(v, {number_word(i)});
    for (const NamedColor& c : kColors) add_words(v, {c.name});
    add_words(v, {"yes", "no"});
    return v;
  }

  // more_circles: a guesser who sees n images picks one of n ordinals, so chance is the mean of 1/n
  // over the (uniform) image counts 2..max_images.
  double chance(const std::string& subtype) const override {
    VLM_CHECK(std::find(kSubtypes.begin(), kSubtypes.end(), subtype) != kSubtypes.end(),
              "multi_image: unknown subtype '" << subtype << "'");
    if (subtype == "colour") return 1.0 / kNumColors;
    if (subtype == "left_of") return 0.5;
    double sum = 0;
    for (int64_t n = 2; n <= max_images_; ++n) sum += 1.0 / static_cast<double>(n);
    return sum / static_cast<double>(max_images_ - 1);
  }
  int max_answer_tokens() const override { return 1; }
  int max_images() const override { return static_cast<int>(max_images_); }
  std::pair<int64_t, int64_t> max_image_size() const override { return {size_, size_}; }

 private:
  // num_objects distinct colours in random order, including `must` when it is >= 0.
  std::vector<SceneObject> scene(Rng& rng, int must) const {
    std::vector<int> pool = {0, 1, 2, 3, 4, 5};
    for (std::size_t i = 0; i + 1 < pool.size(); ++i)  // Fisher-Yates
      std::swap(pool[i], pool[i + static_cast<std::size_t>(rng.below(static_cast<int64_t>(pool.size() - i)))]);
    std::vector<int> colors(pool.begin(), pool.begin() + num_objects_);
    if (must >= 0 && std::find(colors.begin(), colors.end(), must) == colors.end())
      colors[static_cast<std::size_t>(rng.below(num_objects_))] = must;
    return place_objects(rng, colors, size_, half_);
  }

  // The answer, or "" when these scenes do not make the question well posed.
  static std::string answer_of(int kind, const std::vector<std::vector<SceneObject>>& scenes, Shape shape,
                               int64_t target, int color, int64_t a, int64_t b) {
    auto count = [](const std::vector<SceneObject>& objects, Shape sh) {
      return std::count_if(objects.begin(), objects.end(), [&](const SceneObject& o) { return o.shape == sh; });
    };
    if (kind == 0) {
      std::size_t best = 0;
      bool tie = false;
      for (std::size_t i = 1; i < scenes.size(); ++i) {
        const auto c = count(scenes[i], Shape::kCircle), cb = count(scenes[best], Shape::kCircle);
        if (c > cb) {
          best = i;
          tie = false;
        } else if (c == cb) {
          tie = true;
        }
      }
      return tie ? "" : kOrdinals[best];
    }
    if (kind == 1) {
      const auto& objects = scenes[static_cast<std::size_t>(target)];
      if (count(objects, shape) != 1) return "";
      for (const SceneObject& o : objects)
        if (o.shape == shape) return kColors[static_cast<std::size_t>(o.color)].name;
      return "";
    }
    auto x_of = [&](int64_t i) {
      for (const SceneObject& o : scenes[static_cast<std::size_t>(i)])
        if (o.color == color) return o.cx;
      return int64_t{-1};
    };
    const int64_t xa = x_of(a), xb = x_of(b);
    if (xa == xb) return "";
    return xa < xb ? "yes" : "no";
  }

  int64_t seed_, size_, half_, max_images_, num_objects_;
};

}  // namespace

TaskInfo multi_image_info() {
  return {"multi_image",
          "2-4 small Sort-of-CLEVR-like scenes before one question that compares or indexes them",
          {seed_param(),
           {"image_size", int64_t{40}, 20, 256, {}, "image side in pixels; objects scale with size/75"},
           {"max_images", int64_t{4}, 2, 4, {}, "most images per sample (at least 2)"},
           {"num_objects", int64_t{3}, 2, 6, {}, "objects per image, distinct colours"}}};
}

std::unique_ptr<Task> make_multi_image(const Params& p) { return std::make_unique<MultiImage>(p); }

}  // namespace vlm::data::detail
