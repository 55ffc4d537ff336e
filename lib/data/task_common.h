// What the task generators share (internal to lib/data, not part of the task interface): seeding,
// the split rule, the colour table, Sort-of-CLEVR-style scenes and parameter access.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lib/core/random.h"
#include "lib/data/image.h"
#include "lib/data/task.h"

// VLM_CHECK for a task's configuration: a failure is a vlm::ConfigError (a config that cannot run).
#define VLM_TASK_CONFIG_CHECK(cond, msg)            \
  do {                                              \
    if (!(cond)) {                                  \
      std::ostringstream vlm_check_os_;             \
      vlm_check_os_ << msg;                         \
      throw ::vlm::ConfigError(vlm_check_os_.str()); \
    }                                               \
  } while (0)

namespace vlm::data::detail {

using vlm::mix64;

// The Rng seed of one item of a stream: a hash of (seed, split, index, salt). Each split gets an
// unrelated stream; the salt separates streams that share an index (an image and its questions).
uint64_t stream_seed(int64_t seed, Split split, uint64_t index, uint64_t salt = 0);

// 64-bit hash of a tuple of images (sizes and pixels).
uint64_t hash_images(const std::vector<Image>& images);

// The split rule that makes the splits disjoint by construction: a scene (the tuple of images one
// sample shows) belongs to train iff the low two bits of hash_images are 00 or 10 (half the scenes),
// to validation iff they are 01, to test iff they are 11 (a quarter each). A generator redraws a
// scene until it belongs to the split it is asked for, so no validation or test sample ever shows
// the same images as a sample of another split, however small the space of scenes (a 1-object
// counting canvas) and whatever the seeds.
bool in_split(const std::vector<Image>& images, Split split);

struct NamedColor {
  const char* name;
  Rgb rgb;
};
// Sort-of-CLEVR's six colours (Santoro et al. 2017), in the order objects are placed and drawn.
inline constexpr std::array<NamedColor, 6> kColors = {{
    {"red", {255, 0, 0}},
    {"green", {0, 255, 0}},
    {"blue", {0, 0, 255}},
    {"orange", {255, 156, 0}},
    {"gray", {128, 128, 128}},
    {"yellow", {255, 255, 0}},
}};
inline constexpr int kNumColors = static_cast<int>(kColors.size());
inline constexpr Rgb kWhite{255, 255, 255};

inline constexpr std::array<const char*, 4> kOrdinals = {"first", "second", "third", "fourth"};

// "0", "7", "12": numbers as the words prompts and answers use.
std::string number_word(int64_t n);

// Appends the words not yet in `vocab` (a vocabulary keeps its first-seen order, no duplicates).
void add_words(std::vector<std::string>& vocab, const std::vector<std::string>& words);

// Sort-of-CLEVR geometry at another image size: the paper's half-size 5 at 75 px, scaled by
// size / 75 and rounded, at least 1. Squares have side 2h, circles radius h, centres lie in [h, size-h).
int64_t scaled_half(int64_t image_size);

enum class Shape { kSquare, kCircle };
inline const char* shape_word(Shape s) { return s == Shape::kSquare ? "square" : "circle"; }

struct SceneObject {
  int color;  // index into kColors
  Shape shape;
  int64_t cx, cy;  // integer centre
};

// Places one object per entry of `colors`, in that order: shape square or circle with probability
// 1/2, centre uniform in [h, size-h) per axis, redrawn while its squared distance to an earlier centre
// is below (2h)^2 (the paper's "closer than 10 px" at 75 px). Objects may overlap at corners, as in
// the paper; later ones are drawn on top.
std::vector<SceneObject> place_objects(Rng& rng, const std::vector<int>& colors, int64_t size, int64_t half);
// Square: cx-h <= x < cx+h (side 2h, fill_square); circle: (x-cx)^2 + (y-cy)^2 <= h^2 (fill_circle).
Image draw_objects(const std::vector<SceneObject>& objects, int64_t size, int64_t half);

// Objects in words, each as colour, shape, row and column of a 3 x 3 grid over the image ("red circle
// top left"), in the order given; and every word that can produce.
std::vector<std::string> describe_objects(const std::vector<SceneObject>& objects, int64_t size);
std::vector<std::string> object_description_words();

// Typed access to validated params (make_task has filled in every default and checked types).
int64_t param_int(const Params& p, const std::string& key);
double param_double(const Params& p, const std::string& key);

// One entry per task: its description and factory.
TaskInfo sort_of_clevr_info();
std::unique_ptr<Task> make_sort_of_clevr(const Params& p);
TaskInfo counting_info();
std::unique_ptr<Task> make_counting(const Params& p);
TaskInfo ocr_info();
std::unique_ptr<Task> make_ocr(const Params& p);
TaskInfo multi_image_info();
std::unique_ptr<Task> make_multi_image(const Params& p);

// The "seed" parameter every task has.
ParamSpec seed_param();
// The "mode" parameter every task has (task.h: question, describe, text), and the task in that mode.
ParamSpec mode_param();
std::unique_ptr<Task> with_mode(std::unique_ptr<Task> task, const std::string& mode);

}  // namespace vlm::data::detail
