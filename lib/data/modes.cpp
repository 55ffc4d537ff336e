// What every task gets besides its questions: the "describe" and "text" modes (make_task's `mode`
// parameter) and weighted mixes of tasks.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "lib/core/random.h"
#include "lib/data/task_common.h"

namespace vlm::data {

Sample Task::description(Split, uint64_t) const {
  throw ConfigError("task " + name() + " has no describe mode");
}

namespace detail {

namespace {

// The task's descriptions as samples. "describe": the images, then the word "describe"; "text": the
// word "describe" alone (no image), so the model learns the descriptions' language without vision.
class DescribeTask final : public Task {
 public:
  DescribeTask(std::unique_ptr<Task> inner, bool with_images) : inner_(std::move(inner)), images_(with_images) {}
  std::string name() const override { return inner_->name(); }
  Sample sample(Split split, uint64_t index) const override {
    Sample s = inner_->description(split, index);
    s.prompt.clear();
    if (images_) s.prompt.assign(s.images.size(), kImageWord);
    else s.images.clear();
    s.prompt.emplace_back(kDescribeWord);
    s.subtype = kDescribeWord;
    return s;
  }
  std::vector<std::string> subtypes() const override { return {kDescribeWord}; }
  // The task's own words first, so a model that learns both modes gives its questions the same ids.
  std::vector<std::string> vocabulary() const override {
    std::vector<std::string> v = inner_->vocabulary();
    add_words(v, inner_->description_words());
    add_words(v, {kDescribeWord});
    return v;
  }
  double chance(const std::string& subtype) const override {
    VLM_CHECK(subtype == kDescribeWord, name() << ": unknown subtype '" << subtype << "' in describe mode");
    return 0.0;  // one right description among more than 2^40 for every task
  }
  int max_answer_tokens() const override { return inner_->max_description_tokens(); }
  int max_images() const override { return images_ ? inner_->max_images() : 0; }
  std::pair<int64_t, int64_t> max_image_size() const override { return inner_->max_image_size(); }
  Sample description(Split split, uint64_t index) const override { return inner_->description(split, index); }
  std::vector<std::string> description_words() const override { return inner_->description_words(); }
  int max_description_tokens() const override { return inner_->max_description_tokens(); }

 private:
  std::unique_ptr<Task> inner_;
  bool images_;
};

class MixTask final : public Task {
 public:
  MixTask(std::vector<std::unique_ptr<Task>> parts, std::vector<double> weights) : parts_(std::move(parts)) {
    VLM_CHECK(!parts_.empty() && parts_.size() == weights.size(), "mix: " << parts_.size() << " tasks, "
                                                                           << weights.size() << " weights");
    double total = 0;
    for (const double w : weights) {
      VLM_TASK_CONFIG_CHECK(std::isfinite(w) && w > 0, "mix: every weight must be > 0, got " << w);
      total += w;
    }
    double acc = 0;
    for (const double w : weights) cumulative_.push_back(acc += w / total);
    cumulative_.back() = 1.0;
  }
  std::string name() const override {
    std::string n = "mix(";
    for (std::size_t k = 0; k < parts_.size(); ++k) {
      if (k > 0) n += ',';
      n += parts_[k]->name();
    }
    n += ')';
    return n;
  }
  Sample sample(Split split, uint64_t index) const override { return part(index).sample(split, index); }
  std::vector<std::string> subtypes() const override {
    std::vector<std::string> v;
    for (const auto& p : parts_) add_words(v, p->subtypes());
    return v;
  }
  std::vector<std::string> vocabulary() const override {
    std::vector<const Task*> tasks;
    for (const auto& p : parts_) tasks.push_back(p.get());
    return union_vocabulary(tasks);
  }
  double chance(const std::string& subtype) const override {
    for (const auto& p : parts_) {
      const auto st = p->subtypes();
      if (std::find(st.begin(), st.end(), subtype) != st.end()) return p->chance(subtype);
    }
    VLM_CHECK(false, name() << ": unknown subtype '" << subtype << "'");
    return 0;
  }
  int max_answer_tokens() const override { return most([](const Task& t) { return t.max_answer_tokens(); }); }
  int max_images() const override { return most([](const Task& t) { return t.max_images(); }); }
  std::pair<int64_t, int64_t> max_image_size() const override {
    std::pair<int64_t, int64_t> m{0, 0};
    for (const auto& p : parts_) {
      const auto [h, w] = p->max_image_size();
      m = {std::max(m.first, h), std::max(m.second, w)};
    }
    return m;
  }
  Sample description(Split split, uint64_t index) const override { return part(index).description(split, index); }
  std::vector<std::string> description_words() const override {
    std::vector<std::string> v;
    for (const auto& p : parts_) add_words(v, p->description_words());
    return v;
  }
  int max_description_tokens() const override {
    return most([](const Task& t) { return t.max_description_tokens(); });
  }

 private:
  // The part sample `index` comes from: a hash of the index against the cumulative weights.
  const Task& part(uint64_t index) const {
    const double u = static_cast<double>(mix64(index ^ 0x6D1C5EEDULL) >> 11) * 0x1.0p-53;
    std::size_t k = 0;
    while (k + 1 < cumulative_.size() && u >= cumulative_[k]) ++k;
    return *parts_[k];
  }
  template <typename F>
  int most(F f) const {
    int m = 0;
    for (const auto& p : parts_) m = std::max(m, f(*p));
    return m;
  }
  std::vector<std::unique_ptr<Task>> parts_;
  std::vector<double> cumulative_;
};

}  // namespace

ParamSpec mode_param() {
  return {"mode", std::string("question"), 0, 0, {"question", "describe", "text"},
          "\"question\": the task's questions; \"describe\": the answer is a description of the image(s) (every "
          "object's colour, shape and position; the string for ocr); \"text\": the same descriptions without "
          "the image (text-only language pretraining)"};
}

std::unique_ptr<Task> with_mode(std::unique_ptr<Task> task, const std::string& mode) {
  if (mode == "question") return task;
  return std::make_unique<DescribeTask>(std::move(task), mode == "describe");
}

}  // namespace detail

std::unique_ptr<Task> make_mix(std::vector<std::unique_ptr<Task>> parts, std::vector<double> weights) {
  return std::make_unique<detail::MixTask>(std::move(parts), std::move(weights));
}

std::vector<std::string> union_vocabulary(const std::vector<const Task*>& tasks) {
  std::vector<std::string> v;
  for (const Task* t : tasks) detail::add_words(v, t->vocabulary());
  return v;
}

}  // namespace vlm::data
