// Sort-of-CLEVR (Santoro et al. 2017) as ../shared/reference/tasks.md specifies it: six objects, one
// per colour, and 20 questions per image (10 non-relational, then 10 relational).
//
// Questions (X is the reference colour; answers in brackets):
//   shape       what shape is the X object ?                          [square | circle]
//   horizontal  is the X object on the left ?      (cx < size / 2)    [yes | no]
//   vertical    is the X object on top ?           (cy < size / 2)    [yes | no]
//   closest     what shape is the object closest to the X object ?    [square | circle]
//   furthest    what shape is the object furthest from the X object ? [square | circle]
//   count       how many objects have the shape of the X object ?     [1 .. 6]
// Closest and furthest compare squared Euclidean distances between integer centres, X excluded; a
// tie goes to the object placed first (colour order red, green, blue, orange, gray, yellow), as
// np.argmin / argmax do in the paper's generator.
#include <algorithm>

#include "lib/data/task_common.h"

namespace vlm::data::detail {

namespace {

constexpr int64_t kQuestionsPerImage = 20;
constexpr int kNonRelational = 10;  // questions 0..9 of an image; 10..19 are relational
const std::vector<std::string> kSubtypes = {"shape", "horizontal", "vertical", "closest", "furthest", "count"};

class SortOfClevr final : public Task {
 public:
  explicit SortOfClevr(const Params& p)
      : seed_(param_int(p, "seed")),
        size_(param_int(p, "image_size")),
        half_(scaled_half(size_)),
        num_objects_(param_int(p, "num_objects")),
        train_images_(param_int(p, "train_images")),
        eval_images_(param_int(p, "eval_images")) {}

  std::string name() const override { return "sort_of_clevr"; }

  Sample sample(Split split, uint64_t index) const override {
    const uint64_t n_images = static_cast<uint64_t>(split == Split::kTrain ? train_images_ : eval_images_);
    const uint64_t image = (index / kQuestionsPerImage) % n_images;
    const uint64_t q = index % kQuestionsPerImage;

    Sample s;
    std::vector<SceneObject> objects;
    Rng scene_rng(stream_seed(seed_, split, image));
    // The paper's scene holds all six colours in order; a smaller scene draws its colours (kept in
    // colour order) from the same stream first, so the six-object scenes stay the paper's.
    std::vector<int> colors = {0, 1, 2, 3, 4, 5};
    while (static_cast<int64_t>(colors.size()) > num_objects_)
      colors.erase(colors.begin() + static_cast<std::ptrdiff_t>(scene_rng.below(static_cast<int64_t>(colors.size()))));
    do {
      objects = place_objects(scene_rng, colors, size_, half_);
      s.images.assign(1, draw_objects(objects, size_, half_));
    } while (!in_split(s.images, split));

    Rng q_rng(stream_seed(seed_, split, image, 1 + q));
    // Relational questions need a second object; a one-object scene asks only non-relational ones.
    const bool relational = q >= kNonRelational && num_objects_ > 1;
    const int kind = static_cast<int>(q_rng.below(3)) + (relational ? 3 : 0);
    const auto ref = static_cast<std::size_t>(q_rng.below(num_objects_));
    const SceneObject& x = objects[ref];
    const std::string color = kColors[static_cast<std::size_t>(x.color)].name;
    s.subtype = kSubtypes[static_cast<std::size_t>(kind)];

    auto d2 = [&](const SceneObject& o) { return (o.cx - x.cx) * (o.cx - x.cx) + (o.cy - x.cy) * (o.cy - x.cy); };
    switch (kind) {
      case 0:
        s.prompt = {kImageWord, "what", "shape", "is", "the", color, "object", "?"};
        s.answer = {shape_word(x.shape)};
        break;
      case 1:
        s.prompt = {kImageWord, "is", "the", color, "object", "on", "the", "left", "?"};
        s.answer = {2 * x.cx < size_ ? "yes" : "no"};
        break;
      case 2:
        s.prompt = {kImageWord, "is", "the", color, "object", "on", "top", "?"};
        s.answer = {2 * x.cy < size_ ? "yes" : "no"};
        break;
      case 3:
      case 4: {
        const SceneObject* best = nullptr;
        for (const SceneObject& o : objects) {
          if (&o == &x) continue;
          // Strict comparisons keep the earliest object on a tie.
          if (best == nullptr || (kind == 3 ? d2(o) < d2(*best) : d2(o) > d2(*best))) best = &o;
        }
        if (kind == 3)
          s.prompt = {kImageWord, "what", "shape", "is", "the", "object", "closest", "to", "the", color,
                      "object", "?"};
        else
          s.prompt = {kImageWord, "what", "shape", "is", "the", "object", "furthest", "from", "the", color,
                      "object", "?"};
        s.answer = {shape_word(best->shape)};
        break;
      }
      default: {
        const auto n = std::count_if(objects.begin(), objects.end(),
                                     [&](const SceneObject& o) { return o.shape == x.shape; });
        s.prompt = {kImageWord, "how", "many", "objects", "have", "the", "shape", "of", "the", color, "object", "?"};
        s.answer = {number_word(n)};
      }
    }
    return s;
  }

  std::vector<std::string> subtypes() const override { return kSubtypes; }

  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v;
    add_words(v, {"what", "shape", "is", "the", "object", "?", "on", "left", "top", "closest", "to", "furthest",
                  "from", "how", "many", "objects", "have", "of"});
    for (const NamedColor& c : kColors) add_words(v, {c.name});
    add_words(v, {"square", "circle", "yes", "no"});
    for (int n = 1; n <= kNumColors; ++n) add_words(v, {number_word(n)});
    return v;
  }

  double chance(const std::string& subtype) const override {
    VLM_CHECK(std::find(kSubtypes.begin(), kSubtypes.end(), subtype) != kSubtypes.end(),
              "sort_of_clevr: unknown subtype '" << subtype << "'");
    return subtype == "count" ? 1.0 / static_cast<double>(num_objects_) : 0.5;
  }
  int max_answer_tokens() const override { return 1; }
  int max_images() const override { return 1; }
  std::pair<int64_t, int64_t> max_image_size() const override { return {size_, size_}; }

 private:
  int64_t seed_, size_, half_, num_objects_, train_images_, eval_images_;
};

}  // namespace

TaskInfo sort_of_clevr_info() {
  return {"sort_of_clevr",
          "Sort-of-CLEVR (Santoro et al. 2017): 6 coloured squares/circles, 10 non-relational and 10 "
          "relational questions per image",
          {seed_param(),
           {"image_size", int64_t{75}, 20, 512, {}, "image side in pixels; objects and distances scale with size/75"},
           {"num_objects", int64_t{6}, 1, 6, {}, "objects per scene, each a different colour (the paper: 6)"},
           {"train_images", int64_t{9800}, 1, 1e9, {}, "training images (train index wraps at 20x this)"},
           {"eval_images", int64_t{200}, 1, 1e9, {}, "evaluation images (eval index wraps at 20x this)"}}};
}

std::unique_ptr<Task> make_sort_of_clevr(const Params& p) { return std::make_unique<SortOfClevr>(p); }

}  // namespace vlm::data::detail
