// Sort-of-CLEVR (Santoro et al. 2017) as docs/tasks.md describes it: six objects, one
// per colour, and 20 questions per image (10 non-relational, then 10 relational).
//
// Questions (X is the reference colour; answers in brackets). Each ends with the colour word, so
// the token that predicts the answer is the one that names the object (in a small model trained from
// scratch this shortens the plateau before colour binding is learned; a trailing "?" adds a hop):
//   shape       what shape is the object colored X                  [square | circle]
//   horizontal  is on the left the object colored X   (cx < size/2) [yes | no]
//   vertical    is on top the object colored X        (cy < size/2) [yes | no]
//   closest     what shape is closest to the object colored X       [square | circle]
//   furthest    what shape is furthest from the object colored X    [square | circle]
//   count       how many objects have the shape of the object colored X   [1 .. 6]
// Closest and furthest compare squared Euclidean distances between integer centres, X excluded; a
// tie goes to the object placed first (colour order red, green, blue, orange, gray, yellow), as
// np.argmin / argmax do in the paper's generator.
#include <algorithm>
#include <sstream>

#include "lib/data/task_common.h"

namespace vlm::data::detail {

namespace {

constexpr int64_t kQuestionsPerImage = 20;
constexpr int kNonRelational = 10;  // questions 0..9 of an image; 10..19 are relational
const std::vector<std::string> kSubtypes = {"shape", "horizontal", "vertical", "closest", "furthest", "count"};

// "all", or a comma-separated list of subtypes to ask (a curriculum can start with the easy ones).
std::vector<int> parse_questions(const Params& p) {
  const auto it = p.find("questions");
  VLM_CHECK(it != p.end() && std::holds_alternative<std::string>(it->second), "task param 'questions' is missing");
  const std::string& text = std::get<std::string>(it->second);
  if (text == "all") return {};
  std::vector<int> kinds;
  std::stringstream in(text);
  std::string name;
  while (std::getline(in, name, ',')) {
    const auto k = std::find(kSubtypes.begin(), kSubtypes.end(), name);
    if (k == kSubtypes.end()) {
      std::ostringstream os;
      os << "sort_of_clevr: questions: unknown subtype \"" << name << "\" (\"all\" or a comma-separated list of";
      for (const std::string& s : kSubtypes) os << ' ' << s;
      os << ")";
      throw ConfigError(os.str());
    }
    const int kind = static_cast<int>(k - kSubtypes.begin());
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
  }
  if (kinds.empty()) throw ConfigError("sort_of_clevr: questions: empty list (use \"all\" or name subtypes)");
  return kinds;
}

class SortOfClevr final : public Task {
 public:
  explicit SortOfClevr(const Params& p)
      : seed_(param_int(p, "seed")),
        size_(param_int(p, "image_size")),
        half_(scaled_half(size_)),
        num_objects_(param_int(p, "num_objects")),
        kinds_(parse_questions(p)),
        train_images_(param_int(p, "train_images")),
        val_images_(param_int(p, "val_images")),
        test_images_(param_int(p, "test_images")) {
    if (num_objects_ == 1)
      for (const int k : kinds_)
        if (k >= 3)
          throw ConfigError("sort_of_clevr: questions: " + kSubtypes[static_cast<std::size_t>(k)] +
                            " needs num_objects >= 2");
  }

  std::string name() const override { return "sort_of_clevr"; }

  Sample sample(Split split, uint64_t index) const override {
    const uint64_t image = (index / kQuestionsPerImage) % images_in(split);
    const uint64_t q = index % kQuestionsPerImage;

    Sample s;
    const std::vector<SceneObject> objects = scene(split, image, s.images);

    Rng q_rng(stream_seed(seed_, split, image, 1 + q));
    // Relational questions need a second object; a one-object scene asks only non-relational ones.
    const bool relational = q >= kNonRelational && num_objects_ > 1;
    const int kind = kinds_.empty() ? static_cast<int>(q_rng.below(3)) + (relational ? 3 : 0)
                                    : kinds_[static_cast<std::size_t>(q_rng.below(static_cast<int64_t>(kinds_.size())))];
    const auto ref = static_cast<std::size_t>(q_rng.below(num_objects_));
    const SceneObject& x = objects[ref];
    const std::string color = kColors[static_cast<std::size_t>(x.color)].name;
    s.subtype = kSubtypes[static_cast<std::size_t>(kind)];

    auto d2 = [&](const SceneObject& o) { return (o.cx - x.cx) * (o.cx - x.cx) + (o.cy - x.cy) * (o.cy - x.cy); };
    switch (kind) {
      case 0:
        s.prompt = {kImageWord, "what", "shape", "is", "the", "object", "colored", color};
        s.answer = {shape_word(x.shape)};
        break;
      case 1:
        s.prompt = {kImageWord, "is", "on", "the", "left", "the", "object", "colored", color};
        s.answer = {2 * x.cx < size_ ? "yes" : "no"};
        break;
      case 2:
        s.prompt = {kImageWord, "is", "on", "top", "the", "object", "colored", color};
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
          s.prompt = {kImageWord, "what", "shape", "is", "closest", "to", "the", "object", "colored", color};
        else
          s.prompt = {kImageWord, "what", "shape", "is", "furthest", "from", "the", "object", "colored", color};
        s.answer = {shape_word(best->shape)};
        break;
      }
      default: {
        const auto n = std::count_if(objects.begin(), objects.end(),
                                     [&](const SceneObject& o) { return o.shape == x.shape; });
        s.prompt = {kImageWord, "how", "many", "objects", "have", "the", "shape", "of", "the", "object", "colored",
                    color};
        s.answer = {number_word(n)};
      }
    }
    return s;
  }

  // One description per image: index i describes image i (wrapping at the split's image count).
  Sample description(Split split, uint64_t index) const override {
    Sample s;
    const std::vector<SceneObject> objects = scene(split, index % images_in(split), s.images);
    s.answer = describe_objects(objects, size_);
    return s;
  }
  std::vector<std::string> description_words() const override { return object_description_words(); }
  int max_description_tokens() const override { return static_cast<int>(4 * num_objects_); }

  std::vector<std::string> subtypes() const override { return kSubtypes; }

  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v;
    add_words(v, {"what", "shape", "is", "the", "object", "colored", "on", "left", "top", "closest", "to",
                  "furthest", "from", "how", "many", "objects", "have", "of"});
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
  uint64_t images_in(Split split) const {
    return static_cast<uint64_t>(split == Split::kTrain        ? train_images_
                                 : split == Split::kValidation ? val_images_
                                                               : test_images_);
  }
  // Image `image` of the split: its objects, and the picture in `images`.
  std::vector<SceneObject> scene(Split split, uint64_t image, std::vector<Image>& images) const {
    std::vector<SceneObject> objects;
    Rng scene_rng(stream_seed(seed_, split, image));
    // The paper's scene holds all six colours in order; a smaller scene draws its colours (kept in
    // colour order) from the same stream first, so the six-object scenes stay the paper's.
    std::vector<int> colors = {0, 1, 2, 3, 4, 5};
    while (static_cast<int64_t>(colors.size()) > num_objects_)
      colors.erase(colors.begin() + static_cast<std::ptrdiff_t>(scene_rng.below(static_cast<int64_t>(colors.size()))));
    do {
      objects = place_objects(scene_rng, colors, size_, half_);
      images.assign(1, draw_objects(objects, size_, half_));
    } while (!in_split(images, split));
    return objects;
  }

  int64_t seed_, size_, half_, num_objects_;
  std::vector<int> kinds_;  // empty: the paper's mix (10 non-relational, then 10 relational per image)
  int64_t train_images_, val_images_, test_images_;
};

}  // namespace

TaskInfo sort_of_clevr_info() {
  return {"sort_of_clevr",
          "Sort-of-CLEVR (Santoro et al. 2017): 6 coloured squares/circles, 10 non-relational and 10 "
          "relational questions per image",
          {seed_param(),
           {"image_size", int64_t{75}, 20, 512, {}, "image side in pixels; objects and distances scale with size/75"},
           {"num_objects", int64_t{6}, 1, 6, {}, "objects per scene, each a different colour (the paper: 6)"},
           {"questions", std::string("all"), 0, 0, {},
            "\"all\" (the paper's mix) or a comma-separated list of the subtypes to ask, drawn uniformly"},
           {"train_images", int64_t{9800}, 1, 1e9, {}, "training images (train index wraps at 20x this)"},
           {"val_images", int64_t{200}, 1, 1e9, {}, "validation images (validation index wraps at 20x this)"},
           {"test_images", int64_t{200}, 1, 1e9, {}, "test images (test index wraps at 20x this)"}}};
}

std::unique_ptr<Task> make_sort_of_clevr(const Params& p) { return std::make_unique<SortOfClevr>(p); }

}  // namespace vlm::data::detail
