// Tests for the task generators: determinism, disjoint splits, and every answer recomputed from the
// rendered pixels by code that shares nothing with the generators but the documented rules (the six
// colours of tasks.md, the square and circle pixel rules, the font).
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "lib/core/check.h"
#include "lib/data/draw.h"
#include "lib/data/task.h"

namespace vlm::data {
namespace {

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kBlack{0, 0, 0};
// tasks.md: red, green, blue, orange, gray, yellow.
const std::vector<Rgb> kRgb = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 156, 0}, {128, 128, 128}, {255, 255, 0}};
const std::vector<std::string> kNames = {"red", "green", "blue", "orange", "gray", "yellow"};

int color_index(Rgb c) {
  for (std::size_t i = 0; i < kRgb.size(); ++i)
    if (kRgb[i] == c) return static_cast<int>(i);
  return -1;
}

int color_word(const std::string& w) {
  const auto it = std::find(kNames.begin(), kNames.end(), w);
  return it == kNames.end() ? -1 : static_cast<int>(it - kNames.begin());
}

// The bytes of a sample's images, as a key for "same scene".
std::string scene_key(const Sample& s) {
  std::string key;
  for (const Image& img : s.images) {
    key += std::to_string(img.height);
    key += 'x';
    key += std::to_string(img.width);
    key += ':';
    key.append(img.pixels.begin(), img.pixels.end());
  }
  return key;
}

// --- Sort-of-CLEVR-style scenes from pixels ------------------------------------------------------

struct Obj {
  int color;
  bool square;
  int64_t cx, cy;
};

// tasks.md's geometry at another size: half-size 5 at 75 px, scaled and rounded.
int64_t half_for(int64_t size) { return std::max<int64_t>(1, std::llround(5.0 * static_cast<double>(size) / 75.0)); }

bool in_shape(bool square, int64_t cx, int64_t cy, int64_t h, int64_t x, int64_t y) {
  if (square) return x >= cx - h && x < cx + h && y >= cy - h && y < cy + h;  // side 2h
  return (x - cx) * (x - cx) + (y - cy) * (y - cy) <= h * h;                 // radius h
}

// Each colour's object is the one (shape, centre) whose template holds every pixel of that colour and
// whose other pixels are all painted by other objects (objects may overlap at corners; later ones are
// drawn on top). Fails the test unless exactly one fits. Objects come back in colour order.
std::vector<Obj> decode_scene(const Image& img) {
  REQUIRE(img.height == img.width);
  const int64_t size = img.width, h = half_for(size);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> pixels(kRgb.size());
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x) {
      const Rgb c = img.at(y, x);
      if (c == kWhite) continue;
      const int ci = color_index(c);
      REQUIRE(ci >= 0);  // nothing but white and the six colours
      pixels[static_cast<std::size_t>(ci)].emplace_back(y, x);
    }
  std::vector<Obj> objects;
  for (int ci = 0; ci < static_cast<int>(kRgb.size()); ++ci) {
    const auto& v = pixels[static_cast<std::size_t>(ci)];
    if (v.empty()) continue;
    int64_t ymin = size, ymax = -1, xmin = size, xmax = -1;
    for (const auto& [y, x] : v) {
      ymin = std::min(ymin, y), ymax = std::max(ymax, y), xmin = std::min(xmin, x), xmax = std::max(xmax, x);
    }
    std::vector<Obj> fits;
    for (bool square : {true, false})
      for (int64_t cy = ymax - h; cy <= ymin + h; ++cy)
        for (int64_t cx = xmax - h; cx <= xmin + h; ++cx) {
          if (cx < h || cx >= size - h || cy < h || cy >= size - h) continue;  // centres in [h, size-h)
          bool ok = std::all_of(v.begin(), v.end(),
                                [&](const auto& p) { return in_shape(square, cx, cy, h, p.second, p.first); });
          for (int64_t y = cy - h; y <= cy + h && ok; ++y)
            for (int64_t x = cx - h; x <= cx + h && ok; ++x)
              if (in_shape(square, cx, cy, h, x, y)) ok = img.at(y, x) != kWhite;
          if (ok) fits.push_back({ci, square, cx, cy});
        }
    INFO("colour " << kNames[static_cast<std::size_t>(ci)] << " fits " << fits.size() << " objects");
    REQUIRE(fits.size() == 1);
    objects.push_back(fits[0]);
  }
  return objects;
}

const Obj* find_color(const std::vector<Obj>& objects, int color) {
  for (const Obj& o : objects)
    if (o.color == color) return &o;
  return nullptr;
}

int64_t d2(const Obj& a, const Obj& b) { return (a.cx - b.cx) * (a.cx - b.cx) + (a.cy - b.cy) * (a.cy - b.cy); }

// The question's subtype, expected prompt and answer from the decoded objects, by tasks.md's rules.
struct Expected {
  std::string subtype;
  std::vector<std::string> prompt, answer;
};

Expected expected_sort_of_clevr(const std::vector<Obj>& objects, const std::vector<std::string>& prompt,
                                int64_t size) {
  int ref = -1;
  for (const std::string& w : prompt)
    if (color_word(w) >= 0) ref = color_word(w);
  REQUIRE(ref >= 0);
  const Obj& x = *find_color(objects, ref);
  const std::string& c = kNames[static_cast<std::size_t>(ref)];
  auto shape = [](const Obj& o) { return std::string(o.square ? "square" : "circle"); };
  auto has = [&](const char* w) { return std::find(prompt.begin(), prompt.end(), w) != prompt.end(); };
  if (has("closest") || has("furthest")) {
    const bool closest = has("closest");
    const Obj* best = nullptr;  // ties: the first in colour order
    for (const Obj& o : objects)
      if (o.color != ref && (best == nullptr || (closest ? d2(o, x) < d2(*best, x) : d2(o, x) > d2(*best, x))))
        best = &o;
    if (closest)
      return {"closest",
              {"<image>", "what", "shape", "is", "closest", "to", "the", "object", "colored", c},
              {shape(*best)}};
    return {"furthest",
            {"<image>", "what", "shape", "is", "furthest", "from", "the", "object", "colored", c},
            {shape(*best)}};
  }
  if (has("how")) {
    const auto n = std::count_if(objects.begin(), objects.end(), [&](const Obj& o) { return o.square == x.square; });
    return {"count", {"<image>", "how", "many", "objects", "have", "the", "shape", "of", "the", "object", "colored", c},
            {std::to_string(n)}};
  }
  if (has("left"))
    return {"horizontal", {"<image>", "is", "on", "the", "left", "the", "object", "colored", c},
            {2 * x.cx < size ? "yes" : "no"}};
  if (has("top"))
    return {"vertical", {"<image>", "is", "on", "top", "the", "object", "colored", c}, {2 * x.cy < size ? "yes" : "no"}};
  return {"shape", {"<image>", "what", "shape", "is", "the", "object", "colored", c}, {shape(x)}};
}

// --- Counting from pixels -------------------------------------------------------------------------

struct Component {
  int color;
  int64_t pixels, ymin, ymax, xmin, xmax;
};

// 4-connected components of each colour.
std::vector<Component> components(const Image& img) {
  std::vector<int8_t> seen(static_cast<std::size_t>(img.height * img.width), 0);
  std::vector<Component> out;
  for (int64_t y0 = 0; y0 < img.height; ++y0)
    for (int64_t x0 = 0; x0 < img.width; ++x0) {
      const Rgb c = img.at(y0, x0);
      if (c == kWhite || seen[static_cast<std::size_t>(y0 * img.width + x0)]) continue;
      REQUIRE(color_index(c) >= 0);
      Component comp{color_index(c), 0, y0, y0, x0, x0};
      std::vector<std::pair<int64_t, int64_t>> stack = {{y0, x0}};
      seen[static_cast<std::size_t>(y0 * img.width + x0)] = 1;
      while (!stack.empty()) {
        const auto [y, x] = stack.back();
        stack.pop_back();
        ++comp.pixels;
        comp.ymin = std::min(comp.ymin, y), comp.ymax = std::max(comp.ymax, y);
        comp.xmin = std::min(comp.xmin, x), comp.xmax = std::max(comp.xmax, x);
        for (const auto& [dy, dx] : {std::pair<int64_t, int64_t>{1, 0}, {-1, 0}, {0, 1}, {0, -1}}) {
          const int64_t ny = y + dy, nx = x + dx;
          if (!img.contains(ny, nx) || seen[static_cast<std::size_t>(ny * img.width + nx)] || !(img.at(ny, nx) == c))
            continue;
          seen[static_cast<std::size_t>(ny * img.width + nx)] = 1;
          stack.emplace_back(ny, nx);
        }
      }
      out.push_back(comp);
    }
  return out;
}

int64_t disc_pixels(int64_t r) {
  int64_t n = 0;
  for (int64_t y = -r; y <= r; ++y)
    for (int64_t x = -r; x <= r; ++x) n += x * x + y * y <= r * r;
  return n;
}

// Blank pixels between two boxes (the larger of the horizontal and vertical gaps).
int64_t box_gap(const Component& a, const Component& b) {
  const int64_t gx = std::max(b.xmin - a.xmax - 1, a.xmin - b.xmax - 1);
  const int64_t gy = std::max(b.ymin - a.ymax - 1, a.ymin - b.ymax - 1);
  return std::max(gx, gy);
}

// --- OCR from pixels ------------------------------------------------------------------------------

struct Decoded {
  std::string text;
  int64_t scale = 0, y0 = 0, x0 = 0;
};

// Reads the string back: the ink's height gives the scale (every digit and capital spans all 7 font
// rows), then each left edge the first character could start at is tried; a reading counts if every
// cell is a digit or capital and drawing it there reproduces the image exactly.
std::vector<Decoded> decode_text(const Image& img) {
  int64_t ymin = img.height, ymax = -1, xmin = img.width, xmax = -1;
  for (int64_t y = 0; y < img.height; ++y)
    for (int64_t x = 0; x < img.width; ++x) {
      const Rgb c = img.at(y, x);
      if (c == kWhite) continue;
      REQUIRE(c == kBlack);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y), xmin = std::min(xmin, x), xmax = std::max(xmax, x);
    }
  REQUIRE(ymax >= 0);
  REQUIRE((ymax - ymin + 1) % kGlyphHeight == 0);
  const int64_t s = (ymax - ymin + 1) / kGlyphHeight;
  const std::string alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::vector<Decoded> out;
  for (int64_t x0 = xmin - (kGlyphWidth - 1) * s; x0 <= xmin; ++x0) {
    std::string text;
    bool ok = true;
    for (int64_t cx = x0; cx <= xmax && ok; cx += kGlyphAdvance * s) {
      ok = false;
      for (char c : alphabet) {
        Image cell(kGlyphHeight * s, kGlyphWidth * s), want(kGlyphHeight * s, kGlyphWidth * s);
        draw_char(want, c, 0, 0, s, kBlack);
        for (int64_t y = 0; y < cell.height; ++y)
          for (int64_t x = 0; x < cell.width; ++x)
            cell.set(y, x, img.contains(ymin + y, cx + x) ? img.at(ymin + y, cx + x) : kWhite);
        if (cell == want) {
          text += c;
          ok = true;
          break;
        }
      }
    }
    if (!ok || text.empty()) continue;
    Image redrawn(img.height, img.width);
    draw_text(redrawn, text, ymin, x0, s, kBlack);
    if (redrawn == img) out.push_back({text, s, ymin, x0});
  }
  return out;
}

std::unique_ptr<Task> make(const std::string& name, const Params& p = {}) { return make_task(name, p); }

void require_same(const Sample& a, const Sample& b) {
  REQUIRE(a.images == b.images);
  REQUIRE(a.prompt == b.prompt);
  REQUIRE(a.answer == b.answer);
  REQUIRE(a.subtype == b.subtype);
}

const std::vector<std::string> kTasks = {"sort_of_clevr", "counting", "ocr", "multi_image"};

}  // namespace

// --- Every task -----------------------------------------------------------------------------------

TEST_CASE("tasks: a sample is a pure function of (seed, split, index)", "[tasks]") {
  for (const std::string& name : kTasks) {
    INFO(name);
    auto a = make(name, {{"seed", int64_t{11}}});
    auto b = make(name, {{"seed", int64_t{11}}});
    auto other = make(name, {{"seed", int64_t{12}}});
    int differ_seed = 0, differ_split = 0;
    for (uint64_t i : {0ull, 1ull, 7ull, 19ull, 20ull, 12345ull, 987654321ull}) {
      const Sample s = a->sample(Split::kTrain, i);
      require_same(s, a->sample(Split::kTrain, i));  // again, same object
      require_same(s, b->sample(Split::kTrain, i));  // another object, same params
      require_same(a->sample(Split::kValidation, i), b->sample(Split::kValidation, i));
      require_same(a->sample(Split::kTest, i), b->sample(Split::kTest, i));
      // Later samples do not depend on earlier ones.
      require_same(s, make(name, {{"seed", int64_t{11}}})->sample(Split::kTrain, i));
      differ_seed += scene_key(s) != scene_key(other->sample(Split::kTrain, i));
      differ_split += scene_key(s) != scene_key(a->sample(Split::kValidation, i));
      differ_split += scene_key(s) != scene_key(a->sample(Split::kTest, i));
      differ_split += scene_key(a->sample(Split::kValidation, i)) != scene_key(a->sample(Split::kTest, i));
    }
    REQUIRE(differ_seed == 7);
    REQUIRE(differ_split == 21);
  }
}

TEST_CASE("tasks: no scene is in two of train, validation and test (2000 each per task)", "[tasks][split]") {
  struct Case {
    std::string name;
    Params params;
    uint64_t stride;  // sort_of_clevr: one sample per image
  };
  // The last case has few possible scenes (one object on 20x20: 2 shapes x 6 colours x 18^2
  // places), so streams drawn independently would certainly collide; only the split rule keeps
  // them apart.
  const std::vector<Case> cases = {
      {"sort_of_clevr", {{"train_images", int64_t{2000}}, {"val_images", int64_t{2000}}, {"test_images", int64_t{2000}}}, 20},
      {"counting", {}, 1},
      {"ocr", {{"min_length", int64_t{1}}, {"max_length", int64_t{2}}}, 1},
      {"multi_image", {}, 1},
      {"counting", {{"max_objects", int64_t{1}}, {"image_size", int64_t{20}}}, 1},
  };
  for (const Case& c : cases) {
    INFO(c.name << " " << c.params.size());
    auto task = make(c.name, c.params);
    std::map<Split, std::unordered_set<std::string>> seen;
    for (const Split split : {Split::kTrain, Split::kValidation, Split::kTest})
      for (uint64_t i = 0; i < 2000; ++i) seen[split].insert(scene_key(task->sample(split, i * c.stride)));
    for (const Split a : {Split::kTrain, Split::kValidation, Split::kTest})
      for (const Split b : {Split::kTrain, Split::kValidation, Split::kTest}) {
        if (a >= b) continue;
        INFO(split_name(a) << " vs " << split_name(b));
        for (const std::string& key : seen[a]) REQUIRE(seen[b].count(key) == 0);
      }
    if (c.params.count("image_size") != 0)
      for (const auto& [split, keys] : seen) REQUIRE(keys.size() < 1500);  // a small space: repeats are common
  }
}

TEST_CASE("tasks: split names round-trip; anything else is an error naming the key", "[tasks][split]") {
  for (const Split s : {Split::kTrain, Split::kValidation, Split::kTest}) REQUIRE(parse_split(split_name(s), "k") == s);
  REQUIRE_THROWS_WITH(parse_split("eval", "--split"), Catch::Contains("--split: expected train, validation or test"));
}

TEST_CASE("tasks: vocabulary is exactly the words prompts and answers use", "[tasks][vocab]") {
  for (const std::string& name : kTasks) {
    INFO(name);
    auto task = make(name);
    const std::vector<std::string> vocab = task->vocabulary();
    REQUIRE(std::set<std::string>(vocab.begin(), vocab.end()).size() == vocab.size());
    REQUIRE(std::find(vocab.begin(), vocab.end(), kImageWord) == vocab.end());
    REQUIRE(vocab == make(name)->vocabulary());  // fixed order
    std::set<std::string> used;
    const auto [max_h, max_w] = task->max_image_size();
    for (Split split : {Split::kTrain, Split::kValidation, Split::kTest})
      for (uint64_t i = 0; i < 3000; ++i) {
        const Sample s = task->sample(split, i);
        int64_t images = 0;
        for (const std::string& w : s.prompt) {
          if (w == kImageWord) {
            ++images;
            continue;
          }
          INFO(w);
          REQUIRE(std::find(vocab.begin(), vocab.end(), w) != vocab.end());
          used.insert(w);
        }
        for (const std::string& w : s.answer) {
          REQUIRE(std::find(vocab.begin(), vocab.end(), w) != vocab.end());
          used.insert(w);
        }
        REQUIRE(images == static_cast<int64_t>(s.images.size()));
        REQUIRE(images >= 1);
        REQUIRE(images <= task->max_images());
        REQUIRE(!s.answer.empty());
        REQUIRE(static_cast<int>(s.answer.size()) <= task->max_answer_tokens());
        const auto subtypes = task->subtypes();
        REQUIRE(std::find(subtypes.begin(), subtypes.end(), s.subtype) != subtypes.end());
        for (const Image& img : s.images) {
          REQUIRE(img.height <= max_h);
          REQUIRE(img.width <= max_w);
        }
      }
    // Nothing listed that no sample uses (at the default params every word shows up in 6000 samples).
    for (const std::string& w : vocab) {
      INFO(w);
      REQUIRE(used.count(w) == 1);
    }
  }
}

TEST_CASE("tasks: chance is 1 / number of possible answers", "[tasks]") {
  auto soc = make("sort_of_clevr");
  for (const char* st : {"shape", "horizontal", "vertical", "closest", "furthest"}) REQUIRE(soc->chance(st) == 0.5);
  REQUIRE(soc->chance("count") == Approx(1.0 / 6));
  REQUIRE_THROWS_AS(soc->chance("nope"), vlm::Error);
  auto counting = make("counting", {{"min_objects", int64_t{2}}, {"max_objects", int64_t{6}}});
  REQUIRE(counting->chance("count_all") == Approx(1.0 / 5));
  REQUIRE(counting->chance("count_circles") == Approx(1.0 / 7));
  REQUIRE(counting->chance("count_color") == Approx(1.0 / 7));
  auto ocr = make("ocr", {{"min_length", int64_t{1}}, {"max_length", int64_t{2}}});
  REQUIRE(ocr->chance("char_at") == Approx(1.0 / 36));
  REQUIRE(ocr->chance("read") == Approx(1.0 / (36 + 36 * 36)));
  auto multi = make("multi_image");
  REQUIRE(multi->chance("colour") == Approx(1.0 / 6));
  REQUIRE(multi->chance("left_of") == 0.5);
  REQUIRE(multi->chance("more_circles") == Approx((1.0 / 2 + 1.0 / 3 + 1.0 / 4) / 3));
  REQUIRE(make("multi_image", {{"max_images", int64_t{2}}})->chance("more_circles") == 0.5);
}

TEST_CASE("tasks: generating a sample takes well under a millisecond", "[tasks][speed]") {
  for (const std::string& name : kTasks) {
    auto task = make(name);
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t bytes = 0;
    for (uint64_t i = 0; i < 2000; ++i) bytes += task->sample(Split::kTrain, i).images[0].pixels.size();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 2000;
    INFO(name << ": " << us << " us per sample");
    REQUIRE(bytes > 0);
    REQUIRE(us < 500);  // a loose bound that sanitizer builds also meet; release builds take ~10-40 us
  }
}

// --- Parameters -----------------------------------------------------------------------------------

TEST_CASE("task_infos: every task, its seed, defaults inside their ranges", "[tasks][params]") {
  const auto infos = task_infos();
  std::vector<std::string> names;
  for (const TaskInfo& info : infos) {
    names.push_back(info.name);
    INFO(info.name);
    REQUIRE(!info.summary.empty());
    bool has_seed = false;
    Params all;
    for (const ParamSpec& p : info.params) {
      has_seed = has_seed || p.key == "seed";
      REQUIRE(!p.help.empty());
      all[p.key] = p.default_value;
      if (const auto* s = std::get_if<std::string>(&p.default_value)) {
        if (!p.choices.empty()) REQUIRE(std::find(p.choices.begin(), p.choices.end(), *s) != p.choices.end());
        continue;
      }
      const double v = std::holds_alternative<int64_t>(p.default_value)
                           ? static_cast<double>(std::get<int64_t>(p.default_value))
                           : std::get<double>(p.default_value);
      REQUIRE(v >= p.min);
      REQUIRE(v <= p.max);
    }
    REQUIRE(has_seed);
    // Defaults written out explicitly give the same task as defaults left out.
    require_same(make(info.name, all)->sample(Split::kTrain, 5), make(info.name)->sample(Split::kTrain, 5));
  }
  REQUIRE(names == kTasks);
}

TEST_CASE("make_task: unknown task, unknown key, wrong type and out of range are ConfigErrors naming the key",
          "[tasks][params]") {
  REQUIRE_THROWS_WITH(make("sort_of_clevr2"),
                      Catch::Contains("sort_of_clevr2") &&
                          Catch::Contains("sort_of_clevr, counting, ocr, multi_image"));
  REQUIRE_THROWS_AS(make("sort_of_clevr2"), vlm::ConfigError);
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"imagesize", int64_t{75}}}),
                      Catch::Contains("'imagesize'") && Catch::Contains("image_size"));
  REQUIRE_THROWS_AS(make("sort_of_clevr", {{"imagesize", int64_t{75}}}), vlm::ConfigError);
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"image_size", 75.5}}),
                      Catch::Contains("'image_size'") && Catch::Contains("integer"));
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"image_size", std::string("75")}}), Catch::Contains("'image_size'"));
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"image_size", int64_t{10}}}),
                      Catch::Contains("'image_size'") && Catch::Contains("[20, 512]"));
  REQUIRE_THROWS_AS(make("sort_of_clevr", {{"image_size", int64_t{10}}}), vlm::ConfigError);
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"seed", int64_t{-1}}}), Catch::Contains("'seed'"));
  REQUIRE_THROWS_WITH(make("counting", {{"max_objects", int64_t{10}}}), Catch::Contains("'max_objects'"));
  REQUIRE_THROWS_WITH(make("multi_image", {{"max_images", int64_t{1}}}), Catch::Contains("'max_images'"));
  REQUIRE_THROWS_WITH(make("ocr", {{"max_aspect", true}}),
                      Catch::Contains("'max_aspect'") && Catch::Contains("float"));
  REQUIRE_THROWS_WITH(make("ocr", {{"max_aspect", 0.5}}), Catch::Contains("'max_aspect'"));
  // An integer is accepted where a float is expected.
  auto ocr4 = make("ocr", {{"max_aspect", int64_t{4}}});
  REQUIRE(ocr4->max_image_size() == std::pair<int64_t, int64_t>{32, 128});
  // Constraints between keys name both.
  REQUIRE_THROWS_WITH(make("ocr", {{"min_length", int64_t{5}}, {"max_length", int64_t{4}}}),
                      Catch::Contains("min_length") && Catch::Contains("max_length"));
  REQUIRE_THROWS_WITH(make("ocr", {{"min_height", int64_t{20}}, {"max_height", int64_t{10}}}),
                      Catch::Contains("min_height") && Catch::Contains("max_height"));
  REQUIRE_THROWS_WITH(make("ocr", {{"max_length", int64_t{16}}}),  // 97 px of text in a 12 x 8 = 96 px canvas
                      Catch::Contains("max_length") && Catch::Contains("min_height") && Catch::Contains("max_aspect"));
  REQUIRE_NOTHROW(make("ocr", {{"max_length", int64_t{16}}, {"min_height", int64_t{13}}}));
  REQUIRE_THROWS_WITH(make("counting", {{"min_objects", int64_t{5}}, {"max_objects", int64_t{4}}}),
                      Catch::Contains("min_objects") && Catch::Contains("max_objects"));
  REQUIRE_THROWS_AS(make("counting", {{"image_size", int64_t{20}}}), vlm::ConfigError);  // 9 objects do not fit
  REQUIRE_THROWS_WITH(make("counting", {{"image_size", int64_t{20}}}), Catch::Contains("max_objects"));
}

// --- sort_of_clevr --------------------------------------------------------------------------------

TEST_CASE("sort_of_clevr: every answer recomputed from the pixels (300 images x 20 questions)",
          "[tasks][sort_of_clevr]") {
  for (int64_t size : {75, 150, 40}) {
    INFO("image_size " << size);
    auto task = make("sort_of_clevr", {{"image_size", size}});
    const int64_t h = half_for(size);
    const int64_t images = size == 75 ? 300 : 40;
    std::map<std::string, int> subtypes;
    std::map<std::string, std::map<std::string, int>> answers;
    int ties = 0;
    for (Split split : {Split::kTrain, Split::kValidation, Split::kTest})
      for (int64_t m = 0; m < images / 3; ++m) {
        const std::vector<Obj> objects = decode_scene(task->sample(split, static_cast<uint64_t>(m * 20)).images[0]);
        // Six objects, one per colour, squares side 2h and circles radius h, centres in [h, size-h)
        // and never closer than 2h (10 px at 75).
        REQUIRE(objects.size() == 6);
        for (std::size_t i = 0; i < objects.size(); ++i)
          for (std::size_t j = i + 1; j < objects.size(); ++j) {
            REQUIRE(d2(objects[i], objects[j]) >= 4 * h * h);
            for (std::size_t k = 0; k < objects.size(); ++k)
              ties += k != i && k != j && d2(objects[i], objects[j]) == d2(objects[i], objects[k]);
          }
        for (int64_t q = 0; q < 20; ++q) {
          const Sample s = task->sample(split, static_cast<uint64_t>(m * 20 + q));
          REQUIRE(s.images[0] == task->sample(split, static_cast<uint64_t>(m * 20)).images[0]);
          const Expected e = expected_sort_of_clevr(objects, s.prompt, size);
          INFO(join_words(s.prompt) << " -> " << join_words(s.answer));
          REQUIRE(s.subtype == e.subtype);
          REQUIRE(s.prompt == e.prompt);
          REQUIRE(s.answer == e.answer);
          // Questions 0-9 of an image are non-relational, 10-19 relational.
          const bool relational = e.subtype == "closest" || e.subtype == "furthest" || e.subtype == "count";
          REQUIRE(relational == (q >= 10));
          ++subtypes[e.subtype];
          ++answers[e.subtype][e.answer[0]];
        }
      }
    if (size != 75) continue;
    // Subtype and reference colour uniform: each subtype ~1000 of 6000, both answers of the binary ones
    // common, and ties of distances met (and broken as tasks.md says) at least once.
    REQUIRE(subtypes.size() == 6);
    for (const auto& [st, n] : subtypes) {
      INFO(st);
      REQUIRE(n > 850);
      REQUIRE(n < 1150);
      if (st != "count")
        for (const auto& [a, k] : answers[st]) REQUIRE(k > n / 4);
    }
    REQUIRE(answers["count"].size() >= 5);
    REQUIRE(ties > 0);
  }
}

TEST_CASE("sort_of_clevr: num_objects k draws k distinct colours, asks only about them, and 1 asks no relations",
          "[tasks][sort_of_clevr]") {
  for (int64_t k : {1, 2, 4}) {
    INFO("num_objects " << k);
    auto task = make("sort_of_clevr", {{"num_objects", k}});
    std::set<int> colours_seen;
    std::set<std::string> subtypes;
    for (int64_t m = 0; m < 60; ++m) {
      const std::vector<Obj> objects = decode_scene(task->sample(Split::kTrain, static_cast<uint64_t>(m * 20)).images[0]);
      REQUIRE(objects.size() == static_cast<std::size_t>(k));
      std::set<int> colours;
      for (const Obj& o : objects) colours.insert(o.color);
      REQUIRE(colours.size() == static_cast<std::size_t>(k));
      colours_seen.insert(colours.begin(), colours.end());
      for (int64_t q = 0; q < 20; ++q) {
        const Sample s = task->sample(Split::kTrain, static_cast<uint64_t>(m * 20 + q));
        int ref = -1;
        for (const std::string& w : s.prompt)
          if (color_word(w) >= 0) ref = color_word(w);
        REQUIRE(find_color(objects, ref) != nullptr);  // the question names an object in the scene
        const Expected e = expected_sort_of_clevr(objects, s.prompt, 75);
        INFO(join_words(s.prompt) << " -> " << join_words(s.answer));
        REQUIRE(s.subtype == e.subtype);
        REQUIRE(s.answer == e.answer);
        subtypes.insert(s.subtype);
      }
    }
    REQUIRE(colours_seen.size() == 6);  // every colour takes part
    REQUIRE(subtypes.size() == (k == 1 ? 3u : 6u));
    REQUIRE(task->chance("count") == Approx(1.0 / static_cast<double>(k)));
  }
}

TEST_CASE("sort_of_clevr: questions restricts the subtypes asked, on the same scenes; bad lists are ConfigErrors",
          "[tasks][sort_of_clevr]") {
  auto all = make("sort_of_clevr");
  auto some = make("sort_of_clevr", {{"questions", std::string("vertical,count,vertical")}});
  std::map<std::string, int> seen;
  for (uint64_t i = 0; i < 2000; ++i) {
    const Sample s = some->sample(Split::kTrain, i);
    REQUIRE(s.images == all->sample(Split::kTrain, i).images);  // same scene stream
    const Expected e = expected_sort_of_clevr(decode_scene(s.images[0]), s.prompt, 75);
    REQUIRE(s.subtype == e.subtype);
    REQUIRE(s.answer == e.answer);
    ++seen[s.subtype];
  }
  REQUIRE(seen.size() == 2);  // duplicates ignored: vertical and count, about half each
  REQUIRE(seen["vertical"] > 850);
  REQUIRE(seen["count"] > 850);
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"questions", std::string("shape,colour")}}),
                      Catch::Contains("unknown subtype \"colour\""));
  REQUIRE_THROWS_AS(make("sort_of_clevr", {{"questions", std::string("")}}), ConfigError);
  REQUIRE_THROWS_WITH(make("sort_of_clevr", {{"questions", std::string("closest")}, {"num_objects", int64_t{1}}}),
                      Catch::Contains("closest needs num_objects >= 2"));
}

TEST_CASE("sort_of_clevr: sample i shows image i/20; each split wraps at 20 x its image count",
          "[tasks][sort_of_clevr]") {
  auto task = make("sort_of_clevr",
                   {{"train_images", int64_t{5}}, {"val_images", int64_t{3}}, {"test_images", int64_t{4}}});
  std::set<std::string> train, val, test;
  for (uint64_t i = 0; i < 200; ++i) {
    train.insert(scene_key(task->sample(Split::kTrain, i)));
    val.insert(scene_key(task->sample(Split::kValidation, i)));
    test.insert(scene_key(task->sample(Split::kTest, i)));
  }
  REQUIRE(train.size() == 5);
  REQUIRE(val.size() == 3);
  REQUIRE(test.size() == 4);
  require_same(task->sample(Split::kTrain, 37), task->sample(Split::kTrain, 37 + 100));
  require_same(task->sample(Split::kValidation, 37), task->sample(Split::kValidation, 37 + 60));
  require_same(task->sample(Split::kTest, 37), task->sample(Split::kTest, 37 + 80));
  REQUIRE(task->sample(Split::kTrain, 19).images == task->sample(Split::kTrain, 0).images);
  REQUIRE(task->sample(Split::kTrain, 20).images != task->sample(Split::kTrain, 0).images);
  // The paper's split by default: 9,800 train images.
  auto paper = make("sort_of_clevr");
  require_same(paper->sample(Split::kTrain, 3), paper->sample(Split::kTrain, 3 + 9800 * 20));
  REQUIRE(paper->sample(Split::kTrain, 3).images != paper->sample(Split::kTrain, 3 + 9799 * 20).images);
}

// --- counting -------------------------------------------------------------------------------------

TEST_CASE("counting: answers recomputed from the pixels of well-separated objects", "[tasks][counting]") {
  for (int64_t size : {75, 120}) {
    auto task = make("counting", {{"image_size", size}, {"min_gap", int64_t{3}}});
    const int64_t h = half_for(size);
    const int64_t square = (2 * h + 1) * (2 * h + 1), circle = disc_pixels(h);
    std::map<std::string, int> subtypes;
    std::set<int64_t> totals;
    int64_t closest_gap = 1 << 20;
    for (uint64_t i = 0; i < 600; ++i) {
      const Sample s = task->sample(i % 2 ? Split::kTest : Split::kTrain, i);
      const std::vector<Component> comps = components(s.images[0]);
      int64_t circles = 0;
      std::vector<int64_t> per_color(6, 0);
      for (const Component& c : comps) {
        // A whole square (side 2h+1) or circle (radius h) in its (2h+1)^2 box.
        REQUIRE((c.pixels == square || c.pixels == circle));
        REQUIRE(c.xmax - c.xmin == 2 * h);
        REQUIRE(c.ymax - c.ymin == 2 * h);
        circles += c.pixels == circle;
        ++per_color[static_cast<std::size_t>(c.color)];
      }
      for (std::size_t a = 0; a < comps.size(); ++a)
        for (std::size_t b = a + 1; b < comps.size(); ++b) {
          REQUIRE(box_gap(comps[a], comps[b]) >= 3);  // min_gap
          closest_gap = std::min(closest_gap, box_gap(comps[a], comps[b]));
        }
      const int64_t n = static_cast<int64_t>(comps.size());
      REQUIRE(n >= 1);
      REQUIRE(n <= 9);
      totals.insert(n);
      INFO(join_words(s.prompt) << " -> " << join_words(s.answer));
      std::vector<std::string> prompt;
      std::string answer;
      if (s.subtype == "count_circles") {
        prompt = {"<image>", "how", "many", "circles", "?"};
        answer = std::to_string(circles);
      } else if (s.subtype == "count_all") {
        prompt = {"<image>", "how", "many", "objects", "?"};
        answer = std::to_string(n);
      } else {
        REQUIRE(s.subtype == "count_color");
        REQUIRE(s.prompt.size() == 6);
        const int c = color_word(s.prompt[3]);
        REQUIRE(c >= 0);
        prompt = {"<image>", "how", "many", kNames[static_cast<std::size_t>(c)], "objects", "?"};
        answer = std::to_string(per_color[static_cast<std::size_t>(c)]);
      }
      REQUIRE(s.prompt == prompt);
      REQUIRE(s.answer == std::vector<std::string>{answer});
      ++subtypes[s.subtype];
    }
    REQUIRE(subtypes.size() == 3);
    REQUIRE(totals.size() == 9);    // 1..9 objects all occur
    REQUIRE(closest_gap <= 5);      // the gap is a minimum, not a typical spacing
  }
}

TEST_CASE("counting: min_gap 0 lets objects touch", "[tasks][counting]") {
  auto touching = make("counting", {{"min_gap", int64_t{0}}, {"min_objects", int64_t{9}}});
  auto apart = make("counting", {{"min_gap", int64_t{1}}, {"min_objects", int64_t{9}}});
  auto count_touching = [](const Task& t) {
    int n = 0;
    for (uint64_t i = 0; i < 300; ++i) {
      const Image img = t.sample(Split::kTrain, i).images[0];
      for (int64_t y = 0; y + 1 < img.height; ++y)
        for (int64_t x = 0; x + 1 < img.width; ++x) {
          const Rgb c = img.at(y, x), r = img.at(y, x + 1), d = img.at(y + 1, x);
          n += !(c == kWhite) && !(r == kWhite) && !(c == r);
          n += !(c == kWhite) && !(d == kWhite) && !(c == d);
        }
    }
    return n;
  };
  REQUIRE(count_touching(*touching) > 0);
  REQUIRE(count_touching(*apart) == 0);
}

// --- ocr ------------------------------------------------------------------------------------------

TEST_CASE("ocr: the string read back from the pixels with the font matches the answer", "[tasks][ocr]") {
  auto task = make("ocr");
  std::set<int64_t> scales, lengths;
  double widest = 0;
  std::map<std::string, int> subtypes;
  for (uint64_t i = 0; i < 600; ++i) {
    const Sample s = task->sample(i % 3 ? Split::kTrain : Split::kValidation, i);
    const Image& img = s.images[0];
    REQUIRE(img.height >= 12);
    REQUIRE(img.height <= 32);
    REQUIRE(img.width >= img.height);
    REQUIRE(img.width <= 8 * img.height);
    widest = std::max(widest, static_cast<double>(img.width) / static_cast<double>(img.height));
    const std::vector<Decoded> d = decode_text(img);
    INFO(join_words(s.prompt) << " -> " << join_words(s.answer));
    REQUIRE(d.size() == 1);
    const Decoded& t = d[0];
    // The text fits inside a 1-pixel blank border.
    REQUIRE(t.y0 >= 1);
    REQUIRE(t.x0 >= 1);
    REQUIRE(t.y0 + kGlyphHeight * t.scale <= img.height - 1);
    REQUIRE(t.x0 + text_width(static_cast<int64_t>(t.text.size()), t.scale) <= img.width - 1);
    REQUIRE(t.text.size() >= 3);
    REQUIRE(t.text.size() <= 6);
    scales.insert(t.scale);
    lengths.insert(static_cast<int64_t>(t.text.size()));
    ++subtypes[s.subtype];
    if (s.subtype == "read") {
      REQUIRE(s.prompt == std::vector<std::string>{"<image>", "what", "is", "the", "text", "?"});
      std::vector<std::string> chars;
      for (char c : t.text) chars.emplace_back(1, c);
      REQUIRE(s.answer == chars);
    } else {
      REQUIRE(s.subtype == "char_at");
      REQUIRE(s.prompt.size() == 6);
      REQUIRE(std::vector<std::string>(s.prompt.begin(), s.prompt.begin() + 4) ==
              std::vector<std::string>{"<image>", "what", "is", "character"});
      REQUIRE(s.prompt[5] == "?");
      const int index = std::stoi(s.prompt[4]);
      REQUIRE(index >= 1);
      REQUIRE(index <= static_cast<int>(t.text.size()));
      REQUIRE(s.answer == std::vector<std::string>{std::string(1, t.text[static_cast<std::size_t>(index - 1)])});
    }
  }
  REQUIRE(subtypes.size() == 2);
  REQUIRE(scales.size() >= 3);  // random integer scales
  REQUIRE(lengths == std::set<int64_t>{3, 4, 5, 6});
  REQUIRE(widest > 6);  // wide canvases occur
}

TEST_CASE("ocr: long strings on narrow canvases still fit", "[tasks][ocr]") {
  auto task = make("ocr", {{"min_length", int64_t{10}}, {"max_length", int64_t{10}}, {"min_height", int64_t{9}},
                           {"max_height", int64_t{9}}, {"max_aspect", 7.0}});
  for (uint64_t i = 0; i < 200; ++i) {
    const Sample s = task->sample(Split::kTrain, i);
    REQUIRE(s.images[0].height == 9);
    REQUIRE(s.images[0].width <= 63);
    const std::vector<Decoded> d = decode_text(s.images[0]);
    REQUIRE(d.size() == 1);
    REQUIRE(d[0].text.size() == 10);
    REQUIRE(d[0].scale == 1);
  }
}

// --- multi_image ----------------------------------------------------------------------------------

TEST_CASE("multi_image: answers recomputed from the pixels of every image", "[tasks][multi_image]") {
  auto task = make("multi_image");
  const std::vector<std::string> ordinals = {"first", "second", "third", "fourth"};
  std::map<std::string, std::map<std::string, int>> answers;
  std::set<std::size_t> counts;
  for (uint64_t i = 0; i < 900; ++i) {
    const Sample s = task->sample(i % 2 ? Split::kTest : Split::kTrain, i);
    const std::size_t n = s.images.size();
    counts.insert(n);
    REQUIRE(n >= 2);
    REQUIRE(n <= 4);
    std::vector<std::vector<Obj>> scenes;
    for (const Image& img : s.images) {
      REQUIRE(img.height == 40);
      scenes.push_back(decode_scene(img));
      REQUIRE(scenes.back().size() == 3);  // num_objects, distinct colours
    }
    INFO(join_words(s.prompt) << " -> " << join_words(s.answer));
    // All images come first.
    for (std::size_t j = 0; j < n; ++j) REQUIRE(s.prompt[j] == "<image>");
    const std::vector<std::string> q(s.prompt.begin() + static_cast<std::ptrdiff_t>(n), s.prompt.end());
    std::vector<std::string> want_q;
    std::string want;
    if (s.subtype == "more_circles") {
      std::vector<int64_t> circles;
      for (const auto& sc : scenes)
        circles.push_back(std::count_if(sc.begin(), sc.end(), [](const Obj& o) { return !o.square; }));
      const auto best = std::max_element(circles.begin(), circles.end());
      REQUIRE(std::count(circles.begin(), circles.end(), *best) == 1);  // no tie
      want = ordinals[static_cast<std::size_t>(best - circles.begin())];
      want_q = n == 2 ? std::vector<std::string>{"which", "image", "has", "more", "circles", "?"}
                      : std::vector<std::string>{"which", "image", "has", "the", "most", "circles", "?"};
    } else if (s.subtype == "colour") {
      REQUIRE(q.size() == 10);
      const bool square = q[4] == "square";
      const auto o = std::find(ordinals.begin(), ordinals.end(), q[7]);
      REQUIRE(o != ordinals.end());
      const auto& sc = scenes.at(static_cast<std::size_t>(o - ordinals.begin()));
      REQUIRE(std::count_if(sc.begin(), sc.end(), [&](const Obj& ob) { return ob.square == square; }) == 1);
      for (const Obj& ob : sc)
        if (ob.square == square) want = kNames[static_cast<std::size_t>(ob.color)];
      want_q = {"what", "colour", "is", "the", square ? "square" : "circle", "in", "the", *o, "image", "?"};
    } else {
      REQUIRE(s.subtype == "left_of");
      REQUIRE(q.size() == 16);
      const int c = color_word(q[2]);
      const int a = std::stoi(q[6]), b = std::stoi(q[14]);
      REQUIRE(a != b);
      const Obj* oa = find_color(scenes.at(static_cast<std::size_t>(a - 1)), c);
      const Obj* ob = find_color(scenes.at(static_cast<std::size_t>(b - 1)), c);
      REQUIRE(oa != nullptr);
      REQUIRE(ob != nullptr);
      REQUIRE(oa->cx != ob->cx);
      want = oa->cx < ob->cx ? "yes" : "no";
      const std::string cw = kNames[static_cast<std::size_t>(c)];
      want_q = {"is", "the", cw, "object", "in", "image", q[6], "left", "of",
                "the", cw, "object", "in", "image", q[14], "?"};
    }
    REQUIRE(q == want_q);
    REQUIRE(s.answer == std::vector<std::string>{want});
    ++answers[s.subtype][want];
  }
  REQUIRE(counts == std::set<std::size_t>{2, 3, 4});
  REQUIRE(answers.size() == 3);
  REQUIRE(answers["more_circles"].size() == 4);
  REQUIRE(answers["colour"].size() == 6);
  REQUIRE(answers["left_of"].size() == 2);
  REQUIRE(answers["left_of"]["yes"] > answers["left_of"]["no"] / 2);
}

}  // namespace vlm::data

namespace vlm::data {
namespace {

// Every task's defaults with `mode` set.
std::unique_ptr<Task> in_mode(const std::string& task, const std::string& mode) {
  return make_task(task, Params{{"mode", mode}});
}

}  // namespace

TEST_CASE("describe mode: every task's image described in words its vocabulary holds, the question "
          "mode's words keeping their ids", "[tasks][describe]") {
  for (const std::string name : {"sort_of_clevr", "counting", "ocr", "multi_image"}) {
    INFO(name);
    const auto question = make_task(name, {});
    const auto describe = in_mode(name, "describe");
    const auto qv = question->vocabulary(), dv = describe->vocabulary();
    REQUIRE(dv.size() > qv.size());
    CHECK(std::equal(qv.begin(), qv.end(), dv.begin()));  // a prefix: the same ids in both modes
    const std::set<std::string> words(dv.begin(), dv.end());
    CHECK(describe->subtypes() == std::vector<std::string>{"describe"});
    for (uint64_t i = 0; i < 20; ++i) {
      const Sample s = describe->sample(Split::kValidation, i);
      // sort_of_clevr asks 20 questions of each image; describe sample i shows image i.
      const Sample q = question->sample(Split::kValidation, name == "sort_of_clevr" ? 20 * i : i);
      REQUIRE(!s.images.empty());
      CHECK(s.prompt.back() == "describe");
      CHECK(std::count(s.prompt.begin(), s.prompt.end(), kImageWord) == static_cast<long>(s.images.size()));
      CHECK(s.answer.size() <= static_cast<std::size_t>(describe->max_answer_tokens()));
      for (const std::string& w : s.answer) CHECK(words.count(w) == 1);
      CHECK(s.images == q.images);  // the question's scene
    }
  }
}

TEST_CASE("describe mode: the words are the scene's objects (colour, shape, row, column) or the string",
          "[tasks][describe]") {
  // A one-object Sort-of-CLEVR scene: the object's colour is the only non-white colour drawn, and its
  // centre's third of the image gives the row and column words.
  const auto t = make_task("sort_of_clevr", Params{{"mode", std::string("describe")}, {"num_objects", int64_t{1}}});
  for (uint64_t i = 0; i < 10; ++i) {
    const Sample s = t->sample(Split::kTrain, i);
    REQUIRE(s.answer.size() == 4);
    const Image& im = s.images[0];
    double n = 0, sy = 0, sx = 0;
    for (int y = 0; y < static_cast<int>(im.height); ++y)
      for (int x = 0; x < static_cast<int>(im.width); ++x)
        if (!(im.at(y, x) == Rgb{255, 255, 255})) n += 1, sy += y, sx += x;
    REQUIRE(n > 0);
    const char* rows[] = {"top", "middle", "bottom"};
    const char* cols[] = {"left", "center", "right"};
    // The drawn pixels' centroid is within a pixel of the integer centre; away from the thirds' edges
    // it names the row and column.
    const double side = 75.0, cy = sy / n + 0.5, cx = sx / n + 0.5;
    const auto third = [&](double c) { return std::clamp(static_cast<int>(3.0 * c / side), 0, 2); };
    const auto clear = [&](double c) { return std::abs(3.0 * c / side - std::round(3.0 * c / side)) > 0.1; };
    if (clear(cy)) CHECK(s.answer[2] == rows[third(cy)]);
    if (clear(cx)) CHECK(s.answer[3] == cols[third(cx)]);
    CHECK((s.answer[1] == "square" || s.answer[1] == "circle"));
  }
  const auto ocr = in_mode("ocr", "describe");
  const auto q = make_task("ocr", {});
  for (uint64_t i = 0; i < 20; ++i) {
    const Sample d = ocr->sample(Split::kTest, i), s = q->sample(Split::kTest, i);
    if (s.subtype == "read") CHECK(d.answer == s.answer);  // the string, character by character
  }
}

TEST_CASE("text mode: the description without the image", "[tasks][describe]") {
  for (const std::string name : {"sort_of_clevr", "counting", "ocr", "multi_image"}) {
    INFO(name);
    const auto text = in_mode(name, "text"), describe = in_mode(name, "describe");
    CHECK(text->max_images() == 0);
    for (uint64_t i = 0; i < 10; ++i) {
      const Sample a = text->sample(Split::kTrain, i), b = describe->sample(Split::kTrain, i);
      CHECK(a.images.empty());
      CHECK(a.prompt == std::vector<std::string>{"describe"});
      CHECK(a.answer == b.answer);
    }
  }
}

TEST_CASE("make_mix: samples from each part by weight, deterministically; the vocabulary is the parts' "
          "in order", "[tasks][mix]") {
  std::vector<std::unique_ptr<Task>> parts;
  parts.push_back(make_task("counting", {}));
  parts.push_back(make_task("ocr", {}));
  const auto mix = make_mix(std::move(parts), {3.0, 1.0});
  const auto counting = make_task("counting", {}), ocr = make_task("ocr", {});
  int from_counting = 0;
  const int n = 4000;
  for (uint64_t i = 0; i < static_cast<uint64_t>(n); ++i) {
    const Sample s = mix->sample(Split::kTrain, i);
    const Sample c = counting->sample(Split::kTrain, i), o = ocr->sample(Split::kTrain, i);
    const bool is_c = s.prompt == c.prompt && s.answer == c.answer;
    CHECK((is_c || (s.prompt == o.prompt && s.answer == o.answer)));  // part k's own sample i
    from_counting += is_c ? 1 : 0;
    if (i < 50) CHECK(mix->sample(Split::kTrain, i).answer == s.answer);
  }
  CHECK(std::abs(static_cast<double>(from_counting) / n - 0.75) < 0.03);
  const auto v = mix->vocabulary(), cv = counting->vocabulary();
  CHECK(std::equal(cv.begin(), cv.end(), v.begin()));
  CHECK(std::set<std::string>(v.begin(), v.end()).size() == v.size());
  CHECK_THROWS_AS(make_mix({}, {}), Error);
}

}  // namespace vlm::data
