#include "lib/data/task_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "lib/data/draw.h"

namespace vlm::data {

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kValidation: return "validation";
    case Split::kTest: return "test";
  }
  return "?";
}

Split parse_split(const std::string& name, const std::string& what) {
  for (const Split s : {Split::kTrain, Split::kValidation, Split::kTest})
    if (name == split_name(s)) return s;
  throw Error(what + ": expected train, validation or test, got \"" + name.substr(0, 64) + "\"");
}

}  // namespace vlm::data

namespace vlm::data::detail {

uint64_t stream_seed(int64_t seed, Split split, uint64_t index, uint64_t salt) {
  uint64_t h = mix64(static_cast<uint64_t>(seed) + 0x9E3779B97F4A7C15ULL);
  // "train", "valid", "test": a salt per split, so their streams are unrelated.
  const uint64_t salt_of_split = split == Split::kTrain        ? 0x747261696E000000ULL
                                 : split == Split::kValidation ? 0x76616C6964000000ULL
                                                               : 0x7465737400000000ULL;
  h = mix64(h ^ salt_of_split);
  h = mix64(h ^ index);
  return mix64(h ^ (salt * 0xD1B54A32D192ED03ULL));
}

uint64_t hash_images(const std::vector<Image>& images) {
  uint64_t h = 0x243F6A8885A308D3ULL;
  for (const Image& img : images) {
    h = mix64(h ^ static_cast<uint64_t>(img.height));
    h = mix64(h ^ static_cast<uint64_t>(img.width));
    const uint8_t* p = img.pixels.data();
    const std::size_t n = img.pixels.size();
    std::size_t i = 0;
    // Eight bytes a step: a scene is hashed every time it is generated, so this stays cheap.
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
      h ^= h >> 29;
    }
    uint64_t tail = 0;
    for (; i < n; ++i) tail = (tail << 8) | p[i];
    h = mix64(h ^ tail);
  }
  return mix64(h);
}

bool in_split(const std::vector<Image>& images, Split split) {
  const uint64_t h = hash_images(images);
  switch (split) {
    case Split::kTrain: return (h & 1) == 0;
    case Split::kValidation: return (h & 3) == 1;
    case Split::kTest: return (h & 3) == 3;
  }
  return false;
}

std::string number_word(int64_t n) {
  std::ostringstream os;
  os << n;
  return os.str();
}

void add_words(std::vector<std::string>& vocab, const std::vector<std::string>& words) {
  for (const std::string& w : words)
    if (std::find(vocab.begin(), vocab.end(), w) == vocab.end()) vocab.push_back(w);
}

int64_t scaled_half(int64_t image_size) {
  return std::max<int64_t>(1, std::llround(5.0 * static_cast<double>(image_size) / 75.0));
}

std::vector<SceneObject> place_objects(Rng& rng, const std::vector<int>& colors, int64_t size, int64_t half) {
  const int64_t span = size - 2 * half;
  VLM_CHECK(span > 0, "place_objects: image size " << size << " leaves no room for objects of half-size " << half);
  const int64_t min_d2 = (2 * half) * (2 * half);
  // The density is the paper's at every size, where a redraw is rarely needed; the bounds only make
  // an impossible request fail loudly instead of looping.
  for (int restart = 0; restart < 1000; ++restart) {
    std::vector<SceneObject> objects;
    for (int c : colors) {
      SceneObject o{c, rng.below(2) == 0 ? Shape::kSquare : Shape::kCircle, 0, 0};
      bool placed = false;
      for (int attempt = 0; attempt < 1000 && !placed; ++attempt) {
        o.cx = half + rng.below(span);
        o.cy = half + rng.below(span);
        placed = std::all_of(objects.begin(), objects.end(), [&](const SceneObject& e) {
          return (o.cx - e.cx) * (o.cx - e.cx) + (o.cy - e.cy) * (o.cy - e.cy) >= min_d2;
        });
      }
      if (!placed) break;
      objects.push_back(o);
    }
    if (objects.size() == colors.size()) return objects;
  }
  VLM_CHECK(false, "place_objects: cannot place " << colors.size() << " objects on " << size << "x" << size);
  return {};
}

Image draw_objects(const std::vector<SceneObject>& objects, int64_t size, int64_t half) {
  Image img(size, size, kWhite);
  for (const SceneObject& o : objects) {
    const Rgb c = kColors[static_cast<std::size_t>(o.color)].rgb;
    if (o.shape == Shape::kSquare)
      fill_square(img, o.cy, o.cx, 2 * half, c);
    else
      fill_circle(img, o.cy, o.cx, half, c);
  }
  return img;
}

namespace {
constexpr std::array<const char*, 3> kRows = {"top", "middle", "bottom"};
constexpr std::array<const char*, 3> kColumns = {"left", "center", "right"};
}  // namespace

std::vector<std::string> describe_objects(const std::vector<SceneObject>& objects, int64_t size) {
  std::vector<std::string> words;
  for (const SceneObject& o : objects) {
    words.emplace_back(kColors[static_cast<std::size_t>(o.color)].name);
    words.emplace_back(shape_word(o.shape));
    words.emplace_back(kRows[static_cast<std::size_t>(std::clamp<int64_t>(3 * o.cy / size, 0, 2))]);
    words.emplace_back(kColumns[static_cast<std::size_t>(std::clamp<int64_t>(3 * o.cx / size, 0, 2))]);
  }
  return words;
}

std::vector<std::string> object_description_words() {
  std::vector<std::string> v;
  for (const NamedColor& c : kColors) add_words(v, {c.name});
  add_words(v, {"square", "circle"});
  for (const char* w : kRows) add_words(v, {w});
  for (const char* w : kColumns) add_words(v, {w});
  return v;
}

int64_t param_int(const Params& p, const std::string& key) {
  const auto it = p.find(key);
  VLM_CHECK(it != p.end() && std::holds_alternative<int64_t>(it->second),
            "task param '" << key << "' is missing or not an integer");
  return std::get<int64_t>(it->second);
}

double param_double(const Params& p, const std::string& key) {
  const auto it = p.find(key);
  VLM_CHECK(it != p.end(), "task param '" << key << "' is missing");
  if (std::holds_alternative<int64_t>(it->second)) return static_cast<double>(std::get<int64_t>(it->second));
  VLM_CHECK(std::holds_alternative<double>(it->second), "task param '" << key << "' is not a number");
  return std::get<double>(it->second);
}

ParamSpec seed_param() {
  // 2^53: every seed up to it is exact when a config or a report passes it through a double.
  return {"seed", int64_t{0}, 0, 9007199254740992.0, {}, "seed of the task's sample streams"};
}

}  // namespace vlm::data::detail
