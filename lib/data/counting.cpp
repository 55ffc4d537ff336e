// Counting: N objects (min_objects..max_objects), each a square or circle of a random colour, that
// never overlap and keep at least min_gap blank pixels between their bounding boxes.
//
// Geometry: h = scaled_half(image_size) (5 at 75 px); every object fits the (2h+1)^2 box around its
// centre: a square fills the whole box (cx-h <= x <= cx+h, side 11 at 75 px), a circle the pixels with
// (x-cx)^2 + (y-cy)^2 <= h^2. Centres lie in [h, size-1-h]. Two boxes have at least g blank pixels
// between them iff max(|dx|, |dy|) >= 2h + 1 + g, so min_gap 0 lets objects touch.
//
// Questions:
//   count_circles  how many circles ?         [0 .. max_objects]
//   count_color    how many X objects ?       [0 .. max_objects]  (X uniform over the 6 colours)
//   count_all      how many objects ?         [min_objects .. max_objects]
#include <algorithm>
#include <cstdlib>

#include "lib/data/draw.h"
#include "lib/data/task_common.h"

namespace vlm::data::detail {

namespace {

const std::vector<std::string> kSubtypes = {"count_circles", "count_color", "count_all"};

class Counting final : public Task {
 public:
  explicit Counting(const Params& p)
      : seed_(param_int(p, "seed")),
        size_(param_int(p, "image_size")),
        half_(scaled_half(size_)),
        min_objects_(param_int(p, "min_objects")),
        max_objects_(param_int(p, "max_objects")),
        min_gap_(param_int(p, "min_gap")) {
    VLM_TASK_CONFIG_CHECK(min_objects_ <= max_objects_,
              "task counting: min_objects = " << min_objects_ << " exceeds max_objects = " << max_objects_);
    // Random sequential placement stays fast while the boxes (with their gaps) cover well under the
    // ~55% at which such placements jam; refuse settings past 30%.
    const double cell = static_cast<double>(2 * half_ + 1 + min_gap_);
    const double area = static_cast<double>(size_ + min_gap_) * static_cast<double>(size_ + min_gap_);
    VLM_TASK_CONFIG_CHECK(static_cast<double>(max_objects_) * cell * cell <= 0.3 * area,
              "task counting: max_objects = " << max_objects_ << " objects with min_gap = " << min_gap_
                                         << " do not fit loosely on image_size = " << size_
                                         << " (their boxes would cover over 30% of the canvas)");
  }

  std::string name() const override { return "counting"; }

  Sample description(Split split, uint64_t index) const override {
    Sample s;
    int kind = 0, asked = 0;
    const std::vector<SceneObject> objects = scene(split, index, s, kind, asked);
    s.answer = describe_objects(objects, size_);
    return s;
  }
  std::vector<std::string> description_words() const override { return object_description_words(); }
  int max_description_tokens() const override { return static_cast<int>(4 * max_objects_); }

  Sample sample(Split split, uint64_t index) const override {
    Sample s;
    int kind = 0, asked = 0;
    const std::vector<SceneObject> objects = scene(split, index, s, kind, asked);
    const auto n = static_cast<int64_t>(objects.size());

    s.subtype = kSubtypes[static_cast<std::size_t>(kind)];
    int64_t count = 0;
    if (kind == 0) {
      s.prompt = {kImageWord, "how", "many", "circles", "?"};
      count = std::count_if(objects.begin(), objects.end(),
                            [](const SceneObject& o) { return o.shape == Shape::kCircle; });
    } else if (kind == 1) {
      s.prompt = {kImageWord, "how", "many", kColors[static_cast<std::size_t>(asked)].name, "objects", "?"};
      count = std::count_if(objects.begin(), objects.end(),
                            [&](const SceneObject& o) { return o.color == asked; });
    } else {
      s.prompt = {kImageWord, "how", "many", "objects", "?"};
      count = n;
    }
    s.answer = {number_word(count)};
    return s;
  }

  std::vector<std::string> subtypes() const override { return kSubtypes; }

  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v;
    add_words(v, {"how", "many", "circles", "objects", "?"});
    for (const NamedColor& c : kColors) add_words(v, {c.name});
    for (int64_t k = 0; k <= max_objects_; ++k) add_words(v, {number_word(k)});
    return v;
  }

  double chance(const std::string& subtype) const override {
    VLM_CHECK(std::find(kSubtypes.begin(), kSubtypes.end(), subtype) != kSubtypes.end(),
              "counting: unknown subtype '" << subtype << "'");
    const int64_t answers = subtype == "count_all" ? max_objects_ - min_objects_ + 1 : max_objects_ + 1;
    return 1.0 / static_cast<double>(answers);
  }
  std::vector<std::string> metrics() const override { return {"exact_match", "mae"}; }
  int max_answer_tokens() const override { return 1; }
  int max_images() const override { return 1; }
  std::pair<int64_t, int64_t> max_image_size() const override { return {size_, size_}; }

 private:
  // Sample `index`'s objects and picture (into s.images), and the question draws made before them.
  std::vector<SceneObject> scene(Split split, uint64_t index, Sample& s, int& kind, int& asked) const {
    Rng rng(stream_seed(seed_, split, index));
    const int64_t n = min_objects_ + rng.below(max_objects_ - min_objects_ + 1);
    kind = static_cast<int>(rng.below(3));
    asked = static_cast<int>(rng.below(kNumColors));
    std::vector<SceneObject> objects;
    do {
      objects = place(rng, n);
      Image img(size_, size_, kWhite);
      for (const SceneObject& o : objects) {
        const Rgb c = kColors[static_cast<std::size_t>(o.color)].rgb;
        if (o.shape == Shape::kSquare)
          fill_square(img, o.cy, o.cx, 2 * half_ + 1, c);
        else
          fill_circle(img, o.cy, o.cx, half_, c);
      }
      s.images.assign(1, std::move(img));
    } while (!in_split(s.images, split));
    return objects;
  }

  std::vector<SceneObject> place(Rng& rng, int64_t n) const {
    const int64_t span = size_ - 2 * half_;  // centres in [h, size-1-h]
    const int64_t min_dist = 2 * half_ + 1 + min_gap_;
    for (int restart = 0; restart < 1000; ++restart) {
      std::vector<SceneObject> objects;
      for (int64_t i = 0; i < n; ++i) {
        SceneObject o{static_cast<int>(rng.below(kNumColors)), rng.below(2) == 0 ? Shape::kSquare : Shape::kCircle,
                      0, 0};
        bool placed = false;
        for (int attempt = 0; attempt < 1000 && !placed; ++attempt) {
          o.cx = half_ + rng.below(span);
          o.cy = half_ + rng.below(span);
          placed = std::all_of(objects.begin(), objects.end(), [&](const SceneObject& e) {
            return std::max(std::abs(o.cx - e.cx), std::abs(o.cy - e.cy)) >= min_dist;
          });
        }
        if (!placed) break;
        objects.push_back(o);
      }
      if (static_cast<int64_t>(objects.size()) == n) return objects;
    }
    VLM_CHECK(false, "counting: cannot place " << n << " objects on " << size_ << "x" << size_);
    return {};
  }

  int64_t seed_, size_, half_, min_objects_, max_objects_, min_gap_;
};

}  // namespace

TaskInfo counting_info() {
  return {"counting",
          "count circles, objects of a colour, or all objects among 1-9 squares and circles",
          {seed_param(),
           {"image_size", int64_t{75}, 20, 512, {}, "image side in pixels; object size scales with size/75"},
           {"min_objects", int64_t{1}, 1, 9, {}, "fewest objects in an image"},
           {"max_objects", int64_t{9}, 1, 9, {}, "most objects in an image (answers stay one digit)"},
           {"min_gap", int64_t{2}, 0, 64, {}, "blank pixels at least between objects' boxes (0: may touch)"}}};
}

std::unique_ptr<Task> make_counting(const Params& p) { return std::make_unique<Counting>(p); }

}  // namespace vlm::data::detail
