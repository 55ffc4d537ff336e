// Models from shared sizes, the training loss, training and evaluation, written once for every
// family (training/). A toy task defined here keeps these tests independent of the task
// generators: one coloured square on a white canvas, "what colour ?".
#include <catch2/catch.hpp>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <unistd.h>
#include <limits>
#include <functional>
#include <map>
#include <set>

#include "architectures/registry.h"
#include "architectures/transfer.h"
#include "lib/core/memory.h"
#include "lib/core/random.h"
#include "lib/measure/flops.h"
#include "lib/ops/ops.h"
#include "training/cost.h"
#include "training/train.h"

using namespace vlm;

namespace {

const std::vector<std::pair<std::string, data::Rgb>> kColours = {
    {"red", {255, 0, 0}}, {"green", {0, 255, 0}}, {"blue", {0, 0, 255}}, {"yellow", {255, 255, 0}}};

// One square of a random colour. With `varied`, samples also differ in canvas size (16 or 32 per
// side), number of images (1 or 2: "what colour is the last ?") and answer length ("dark red").
class ToyTask : public data::Task {
 public:
  explicit ToyTask(bool varied = false, bool fixed_size = true) : varied_(varied), fixed_size_(fixed_size) {}
  std::string name() const override { return "toy"; }
  data::Sample sample(data::Split split, uint64_t index) const override {
    Rng rng(index * 2654435761ULL + static_cast<uint64_t>(split) * 0x5eedULL);
    data::Sample s;
    const int n_images = varied_ ? 1 + static_cast<int>(rng.below(2)) : 1;
    std::string colour;
    for (int i = 0; i < n_images; ++i) {
      const int64_t side = varied_ && !fixed_size_ ? 16 * (1 + static_cast<int64_t>(rng.below(2))) : 16;
      data::Image im(side, side);
      const auto& [word, rgb] = kColours[rng.below(kColours.size())];
      const int64_t y0 = static_cast<int64_t>(rng.below(static_cast<uint64_t>(side - 8)));
      const int64_t x0 = static_cast<int64_t>(rng.below(static_cast<uint64_t>(side - 8)));
      for (int64_t y = y0; y < y0 + 8; ++y)
        for (int64_t x = x0; x < x0 + 8; ++x) im.set(y, x, rgb);
      s.images.push_back(std::move(im));
      s.prompt.push_back(data::kImageWord);
      colour = word;
    }
    for (const char* w : {"what", "colour", "?"}) s.prompt.push_back(w);
    if (varied_ && rng.below(2) == 1) s.answer.push_back("dark");
    s.answer.push_back(colour);
    s.subtype = "colour";
    return s;
  }
  std::vector<std::string> subtypes() const override { return {"colour"}; }
  std::vector<std::string> vocabulary() const override {
    return {"what", "colour", "?", "dark", "red", "green", "blue", "yellow"};
  }
  double chance(const std::string&) const override { return 0.25; }
  int max_answer_tokens() const override { return varied_ ? 2 : 1; }
  int max_images() const override { return varied_ ? 2 : 1; }
  std::pair<int64_t, int64_t> max_image_size() const override { return {32, 32}; }

 private:
  bool varied_, fixed_size_;
};

ModelSizes tiny_sizes() {
  ModelSizes s;
  s.text = {.hidden_size = 32, .num_hidden_layers = 1, .num_attention_heads = 2, .num_key_value_heads = 0,
            .intermediate_size = 64};
  s.vision = {.hidden_size = 32, .num_hidden_layers = 1, .num_attention_heads = 2, .intermediate_size = 64,
              .patch_size = 8, .image_size = 16, .num_channels = 3};
  return s;
}

// Family keys and processor options that keep each family tiny and accept 16-32 px images.
VlmSpec tiny_spec(const std::string& family, uint64_t seed = 1) {
  VlmSpec spec{.family = family, .sizes = tiny_sizes(), .family_keys = nlohmann::json::object(),
               .processor_options = nlohmann::json::object(), .init_seed = seed};
  if (family == "flamingo")
    spec.family_keys = {{"resampler_n_latents", 4}, {"resampler_depth", 1}};
  if (family == "qwen2vl") spec.processor_options = {{"min_pixels", 256}, {"max_pixels", 1024}};
  if (family == "fuyu") spec.processor_options = {{"size", {{"height", 32}, {"width", 32}}}};
  return spec;
}

// Every registry family, in the registry's order: a new family is covered by the loops below at once.
const std::vector<std::string> kFamilies = [] {
  std::vector<std::string> names;
  for (const FamilyEntry& f : families()) names.emplace_back(f.name);
  return names;
}();

std::vector<float> grads_of(Vlm& vlm) {
  std::vector<float> out;
  for (const auto& [name, p] : named_parameters(vlm.model())) {
    const Tensor grad = p.grad();  // zeros where no gradient reached
    const float* g = grad.data();
    out.insert(out.end(), g, g + p.numel());
  }
  return out;
}

void zero_grads(Vlm& vlm) {
  for (auto& [name, p] : named_parameters(vlm.model())) p.zero_grad();
}

}  // namespace

TEST_CASE("build_config: every family builds at shared sizes, with family keys placed by HF name",
          "[training][sizes]") {
  ToyTask task;
  for (const std::string& family : kFamilies) {
    INFO(family);
    Vlm vlm(tiny_spec(family), task);
    const ParamCounts c = vlm.param_counts();
    CHECK(c.total() == count_parameters(vlm.model()));
    CHECK(c.connector > 0);
    CHECK(c.lm > 0);
    // Fuyu has no vision encoder: its patch embedding is the connector.
    CHECK((c.vision == 0) == (family == "fuyu"));
  }
  const data::Vocab vocab = task_vocab(task);
  CHECK(vocab.size() == SpecialTokens::kCount + 8);
  CHECK(vocab.id("what") == SpecialTokens::kCount);

  ModelSizes sizes = tiny_sizes();
  sizes.vocab_size = vocab.size();
  const FamilyEntry* llava = nullptr;
  const FamilyEntry* qwen = nullptr;
  for (const FamilyEntry& f : families()) {
    if (f.name == "llava") llava = &f;
    if (f.name == "qwen2vl") qwen = &f;
  }
  REQUIRE(llava);
  REQUIRE(qwen);
  const nlohmann::json j = llava->build_config(sizes, {{"projector_hidden_act", "relu"}, {"rms_norm_eps", 1e-5},
                                                      {"vision_config.hidden_act", "gelu"}});
  CHECK(j["projector_hidden_act"] == "relu");
  CHECK(j["text_config"]["rms_norm_eps"] == 1e-5);  // found in the one sub-config that has it
  CHECK(j["vision_config"]["hidden_act"] == "gelu");
  CHECK(j["text_config"]["num_key_value_heads"] == 2);  // 0 means "as many as heads"
  CHECK(j["text_config"]["vocab_size"] == vocab.size());
  CHECK(j["image_token_index"] == SpecialTokens{}.image);
  CHECK(llava->build_config(sizes, {{"vision_feature_layer", nlohmann::json::array({-2, -1})}})["vision_feature_layer"] ==
        nlohmann::json::array({-2, -1}));
  CHECK_THROWS_AS(llava->build_config(sizes, {{"projector_hiden_act", "relu"}}), ConfigError);
  CHECK_THROWS_WITH(llava->build_config(sizes, {{"projector_hiden_act", "relu"}}),
                    Catch::Contains("unknown key \"projector_hiden_act\"") && Catch::Contains("projector_hidden_act"));
  CHECK_THROWS_WITH(llava->build_config(sizes, {{"projector_hidden_act", 3}}),
                    Catch::Contains("projector_hidden_act: expected a value like \"gelu\""));
  // hidden_size is in both of qwen2vl's sub-configs: a dotted path is required.
  CHECK_THROWS_WITH(qwen->build_config(sizes, {{"hidden_size", 64}}), Catch::Contains("ambiguous"));
  const nlohmann::json q = qwen->build_config(sizes, {{"spatial_merge_size", 1}});
  CHECK(q["vision_config"]["spatial_merge_size"] == 1);
  // head_dim 16: mrope_section splits its half (8) as t 2, h 3, w 3.
  CHECK(q["text_config"]["rope_parameters"]["mrope_section"] == nlohmann::json::array({2, 3, 3}));

  // Families without grouped-query attention refuse sizes that ask for it.
  ModelSizes gqa = sizes;
  gqa.text.num_key_value_heads = 1;
  for (const FamilyEntry& f : families()) {
    INFO(f.name);
    if (f.name == "flamingo" || f.name == "fuyu") {
      CHECK_THROWS_WITH(f.build_config(gqa, nullptr), Catch::Contains("grouped-query"));
    } else {
      CHECK(f.build_config(gqa, nullptr)["text_config"]["num_key_value_heads"] == 1);
    }
  }
}

TEST_CASE("Training loss: a batch gives the same loss and gradients as its samples one by one",
          "[training][loss]") {
  // Samples differ in prompt length, number of images, image size (native-resolution families) and
  // answer length, so the batch is padded.
  for (const std::string& family : kFamilies) {
    INFO(family);
    const bool native = family == "fuyu" || family == "qwen2vl";
    ToyTask task(true, !native);
    Vlm vlm(tiny_spec(family), task);
    std::vector<data::Sample> samples;
    for (uint64_t i = 0; samples.size() < 4; ++i) samples.push_back(task.sample(data::Split::kTrain, i));

    Tensor batch_loss = vlm.loss(vlm.train_batch(samples));
    batch_loss.backward();
    const std::vector<float> g_batch = grads_of(vlm);
    zero_grads(vlm);

    double mean_loss = 0;
    std::vector<double> g_mean(g_batch.size(), 0.0);
    for (const data::Sample& s : samples) {
      Tensor l = vlm.loss(vlm.train_batch(std::span<const data::Sample>(&s, 1)));
      mean_loss += l.item() / static_cast<double>(samples.size());
      l.backward();
      const std::vector<float> g = grads_of(vlm);
      for (std::size_t k = 0; k < g.size(); ++k) g_mean[k] += g[k] / static_cast<double>(samples.size());
      zero_grads(vlm);
    }
    CHECK(batch_loss.item() == Approx(mean_loss).epsilon(1e-5));
    double max_diff = 0, max_g = 0;
    for (std::size_t k = 0; k < g_batch.size(); ++k) {
      max_diff = std::max(max_diff, std::abs(g_batch[k] - g_mean[k]));
      max_g = std::max(max_g, std::abs(g_mean[k]));
    }
    CHECK(max_g > 0);
    CHECK(max_diff <= 1e-5 * std::max(1.0, max_g));
  }
}

TEST_CASE("Training loss: every family's forward with logits_to_keep gives the full forward's last logits and "
          "gradients, without the dropped rows' last-layer work",
          "[training][loss][keep]") {
  // A padded batch (prompt lengths, images, answer lengths differ), the last 3 positions kept.
  for (const std::string& family : kFamilies) {
    INFO(family);
    const bool native = family == "fuyu" || family == "qwen2vl";
    ToyTask task(true, !native);
    VlmSpec spec = tiny_spec(family);
    if (family == "flamingo") spec.family_keys["alpha_initializer"] = "ones";  // gates open: every path live
    Vlm vlm(spec, task);
    std::vector<data::Sample> samples;
    for (uint64_t i = 0; samples.size() < 4; ++i) samples.push_back(task.sample(data::Split::kTrain, i));
    const Vlm::TrainBatch batch = vlm.train_batch(samples);
    constexpr int64_t keep = 3;

    const Tensor full = vlm.model().forward(batch.inputs).logits;
    const int64_t B = full.dim(0), T = full.dim(1), V = full.dim(2);
    REQUIRE(T > keep + 2);
    Rng rng(9);
    const Tensor w = Tensor::randn({B, keep, V}, rng, 1.0);
    sum_all(mul(slice(full, 1, T - keep, T), w)).backward();
    const std::vector<float> g_full = grads_of(vlm);
    zero_grads(vlm);

    const FlopScope flops;
    const Tensor kept = vlm.model().forward(batch.inputs, keep).logits;
    const int64_t kept_flops = flops.flops();
    REQUIRE(kept.shape() == Shape{B, keep, V});
    const Tensor tail = slice(full, 1, T - keep, T);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < kept.numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(kept.data()[i] - tail.data()[i])));
      scale = std::max(scale, static_cast<double>(std::abs(tail.data()[i])));
    }
    CHECK(worst <= 1e-5 * std::max(1.0, scale));
    sum_all(mul(kept, w)).backward();
    const std::vector<float> g_keep = grads_of(vlm);
    zero_grads(vlm);
    double max_diff = 0, max_g = 0;
    for (std::size_t k = 0; k < g_full.size(); ++k) {
      max_diff = std::max(max_diff, static_cast<double>(std::abs(g_keep[k] - g_full[k])));
      max_g = std::max(max_g, static_cast<double>(std::abs(g_full[k])));
    }
    CHECK(max_g > 0);
    CHECK(max_diff <= 1e-5 * std::max(1.0, max_g));

    // The last LM layer's feed-forward on the other rows (at least two C x I products a row) is skipped.
    const FlopScope full_flops;
    {
      NoGradGuard no_grad;
      (void)vlm.model().forward(batch.inputs);
    }
    const ModelSizes::Text text = resolved_text(tiny_sizes());
    CHECK(kept_flops <= full_flops.flops() - B * (T - keep) * 2 * 2 * text.hidden_size * text.intermediate_size);
  }
}

TEST_CASE("Training loss: only answer tokens count", "[training][loss]") {
  ToyTask task;
  Vlm vlm(tiny_spec("llava"), task);
  const data::Sample s = task.sample(data::Split::kTrain, 3);
  Vlm::TrainBatch b = vlm.train_batch(std::span<const data::Sample>(&s, 1));
  REQUIRE(b.targets.size() == 1);
  CHECK(b.targets[0] == std::vector<int64_t>{vlm.vocab().id(s.answer[0]), SpecialTokens{}.eos});
  // The loss is the mean cross-entropy of the last two positions' predictions, recomputed here from
  // the logits.
  const Tensor loss = vlm.loss(b);
  NoGradGuard no_grad;
  const Tensor logits = vlm.model().forward(b.inputs).logits;
  const int64_t T = logits.dim(1), V = logits.dim(2);
  double expect = 0;
  for (int k = 0; k < 2; ++k) {
    const float* row = logits.data() + (T - 3 + k) * V;
    double mx = -1e30, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    expect += (mx + std::log(z) - row[b.targets[0][static_cast<std::size_t>(k)]]) / 2;
  }
  CHECK(loss.item() == Approx(expect).epsilon(1e-5));
}

// IDEFICS starts its tanh gates at 0 (alpha_initializer "zeros": a pretrained LM is left intact at
// first), so its cross-attention starts silent and the step where it starts to learn moves with the
// build's rounding (about 2000 steps here, in either direction). Trained from scratch, open gates
// (an IdeficsConfig option) learn in about 1000; this test uses them so that every family has the
// same margin. About 6 s for all four in the optimised build.
TEST_CASE("Training: every family learns the colour of the single object to >= 95%", "[training][learn]") {
  ToyTask task;
  for (const std::string& family : kFamilies) {
    INFO(family);
    VlmSpec spec = tiny_spec(family, 7);
    if (family == "flamingo") spec.family_keys["alpha_initializer"] = "ones";
    Vlm vlm(spec, task);
    const auto t0 = std::chrono::steady_clock::now();
    TrainState st;
    train(vlm, task, TrainOptions{.steps = 2000, .batch_size = 16, .lr = 3e-3, .min_lr = 3e-4}, st);
    const auto& log = st.log;
    const EvalResult r = evaluate(vlm, task, data::Split::kTest, 200);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.scores.size() == 2);
    const SubtypeScore& all = r.scores.back();
    UNSCOPED_INFO(family << ": loss " << log.front().loss << " -> " << log.back().loss << ", accuracy "
                         << all.accuracy << " in " << secs << " s");
    CHECK(all.n == 200);
    CHECK(all.accuracy >= 0.95);
    CHECK(log.back().loss < log.front().loss);
    CHECK(log.front().flops > 0);
  }
}

TEST_CASE("Evaluation: exact match, chance and majority baselines from the eval items", "[training][eval]") {
  ToyTask task;
  Vlm vlm(tiny_spec("llava"), task);  // untrained: answers are whatever it says
  const EvalResult r = evaluate(vlm, task, data::Split::kTest, 50, 16);
  REQUIRE(r.items.size() == 50);
  REQUIRE(r.scores.size() == 2);
  std::map<std::string, int> freq;
  int correct = 0;
  for (int64_t i = 0; i < 50; ++i) {
    const EvalItem& it = r.items[static_cast<std::size_t>(i)];
    const data::Sample s = task.sample(data::Split::kTest, static_cast<uint64_t>(i));
    CHECK(it.index == i);
    CHECK(it.answer == s.answer[0]);
    CHECK(it.correct == (it.prediction == it.answer));
    correct += it.correct;
    ++freq[it.answer];
  }
  int top = 0;
  for (const auto& [a, c] : freq) top = std::max(top, c);
  for (const SubtypeScore& sc : r.scores) {
    CHECK(sc.n == 50);
    CHECK(sc.correct == correct);
    CHECK(sc.chance == 0.25);
    CHECK(sc.majority == Approx(top / 50.0));
  }
  // Batching does not change the answers.
  const EvalResult r1 = evaluate(vlm, task, data::Split::kTest, 50, 1);
  for (std::size_t i = 0; i < 50; ++i) CHECK(r1.items[i].prediction == r.items[i].prediction);
}

TEST_CASE("Training stops with a clear error when the loss is not finite", "[training][nan]") {
  ToyTask task;
  Vlm vlm(tiny_spec("llava"), task);
  for (auto& [name, p] : named_parameters(vlm.model())) {
    if (name.find("embed_tokens") == std::string::npos) continue;
    float* w = p.data();
    for (int64_t i = 0; i < p.numel(); ++i) w[i] = std::numeric_limits<float>::quiet_NaN();
  }
  TrainState st;
  CHECK_THROWS_WITH(train(vlm, task, TrainOptions{.steps = 3, .batch_size = 2}, st),
                    Catch::Contains("training diverged at step 0"));
  CHECK(st.steps_done == 0);
}

// Counts the samples drawn from it; otherwise the toy task.
class CountedTask : public ToyTask {
 public:
  using ToyTask::ToyTask;
  data::Sample sample(data::Split split, uint64_t index) const override {
    ++draws;
    return ToyTask::sample(split, index);
  }
  mutable int draws = 0;
};

TEST_CASE("Training: a curriculum's phases supply the first steps' samples, in order, then the main task",
          "[training][curriculum]") {
  CountedTask first, second, main;
  Vlm vlm(tiny_spec("fuyu"), main);
  TrainOptions opt{.steps = 7, .batch_size = 3};
  opt.phases = {{.steps = 2, .task = &first}, {.steps = 4, .task = &second}};
  TrainState st;
  train(vlm, main, opt, st);
  CHECK(st.log.size() == 7);
  CHECK(first.draws == 2 * 3);
  CHECK(second.draws == 4 * 3);
  CHECK(main.draws == 1 * 3);
  // The phases may not outrun the budget.
  opt.phases = {{.steps = 5, .task = &first}, {.steps = 3, .task = &second}};
  TrainState again;
  CHECK_THROWS_WITH(train(vlm, main, opt, again),
                    Catch::Contains("the curriculum's 8 steps exceed the 7 training steps"));
}

TEST_CASE("Cost: visual tokens, prompt length and FLOPs per phase", "[training][cost]") {
  ToyTask task;
  for (const std::string& family : kFamilies) {
    INFO(family);
    Vlm vlm(tiny_spec(family), task);
    const data::Sample s = task.sample(data::Split::kTest, 0);
    const InferenceCost c = inference_cost(vlm, s);
    const ImageCost per_image = vlm.processor().image_cost(16, 16);
    CHECK(c.visual_tokens == per_image.visual_tokens);
    CHECK(per_image.visual_tokens > 0);
    // The prompt holds the image's LM positions and every text word (BOS aside).
    const auto text_words = static_cast<int64_t>(s.prompt.size()) - 1;
    CHECK(c.lm_tokens >= per_image.lm_tokens + text_words);
    // Spliced families put every visual token in the LM sequence; flamingo keeps them as context.
    if (family != "flamingo") CHECK(per_image.lm_tokens >= per_image.visual_tokens);
    CHECK(c.prefill_flops > c.decode_flops_per_token);
    CHECK(c.decode_flops_per_token > 0);
    // Two images cost twice the visual tokens.
    data::Sample two = s;
    two.images.push_back(s.images[0]);
    two.prompt.insert(two.prompt.begin(), data::kImageWord);
    CHECK(inference_cost(vlm, two).visual_tokens == 2 * per_image.visual_tokens);
  }
}

TEST_CASE("Training: every parameter of every family receives a gradient from the answer loss",
          "[training][grad]") {
  // A detached path (a copy that drops the graph) would silently freeze part of a model.
  ToyTask task;
  for (const std::string& family : kFamilies) {
    VlmSpec spec = tiny_spec(family);
    // IDEFICS's gates start at tanh(0) = 0, which gives its cross-attention, resampler and vision
    // tower exactly zero gradient at the first step; open them to see the paths.
    if (family == "flamingo") spec.family_keys["alpha_initializer"] = "ones";
    Vlm vlm(spec, task);
    std::vector<data::Sample> samples;
    for (uint64_t i = 0; i < 4; ++i) samples.push_back(task.sample(data::Split::kTrain, i));
    Tensor loss = vlm.loss(vlm.train_batch(samples));
    loss.backward();
    for (const auto& [name, p] : named_parameters(vlm.model())) {
      INFO(family << ": " << name);
      const Tensor g = p.grad();
      double norm = 0;
      for (int64_t i = 0; i < g.numel(); ++i) norm += std::abs(g.data()[i]);
      // Rows of tokens that never occur (the embedding of unused words) legitimately get none, and
      // CLIP's post_layernorm only pools CLS for CLIP's own head: no VLM reads it (as in HF).
      if (name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos ||
          name.find("post_layernorm") != std::string::npos)
        continue;
      CHECK(norm > 0);
    }
  }
}

TEST_CASE("Training: every family's gradients match central differences of the loss", "[training][grad]") {
  // backward() of a whole model, checked against the loss itself: for each parameter tensor, its
  // largest-gradient element is moved by +-h and the loss difference must give that gradient (a
  // tensor cut off from the graph has analytic 0 there and fails). The models are float: the loss
  // is exact to ~1e-6, so h = 1e-3 leaves ~5e-4 of rounding in the difference, under the 1e-3 slack.
  ToyTask task(true, true);
  std::vector<std::pair<std::string, VlmSpec>> specs;
  for (const std::string& family : kFamilies) specs.emplace_back(family, tiny_spec(family, 3));
  VlmSpec open = tiny_spec("flamingo", 3);
  open.family_keys["alpha_initializer"] = "ones";  // tanh(0) gates hide the cross-attention paths
  specs.emplace_back("flamingo (open gates)", open);
  for (auto& [label, spec] : specs) {
    Vlm vlm(spec, task);
    std::vector<data::Sample> samples;
    for (uint64_t i = 0; i < 3; ++i) samples.push_back(task.sample(data::Split::kTrain, i));
    const Vlm::TrainBatch batch = vlm.train_batch(samples);
    vlm.loss(batch).backward();
    int checked = 0;
    for (auto& [name, p] : named_parameters(vlm.model())) {
      const Tensor g = p.grad();
      int64_t at = 0;
      for (int64_t i = 1; i < g.numel(); ++i)
        if (std::abs(g.data()[i]) > std::abs(g.data()[at])) at = i;
      const double analytic = g.data()[at];
      constexpr float h = 1e-3F;
      float* w = p.data();
      const float saved = w[at];
      double plus = 0, minus = 0;
      {
        NoGradGuard no_grad;
        w[at] = saved + h;
        plus = vlm.loss(batch).item();
        w[at] = saved - h;
        minus = vlm.loss(batch).item();
        w[at] = saved;
      }
      const double numeric = (plus - minus) / (2.0 * static_cast<double>(h));
      INFO(label << ": " << name << "[" << at << "] analytic " << analytic << ", numeric " << numeric);
      CHECK(std::abs(analytic - numeric) <= 0.02 * std::abs(analytic) + 1e-3);
      ++checked;
    }
    INFO(label);
    CHECK(checked >= 10);
  }
}

TEST_CASE("init_std: matched parameters are redrawn at the given std, every other one keeps its value",
          "[training][init]") {
  ToyTask task;
  const VlmSpec plain = tiny_spec("llava", 5);
  VlmSpec spec = plain;
  spec.init_std = {{"*position_embedding*", 3.0}, {"multi_modal_projector.linear_1.weight", 0.0}};
  Vlm a(plain, task), b(spec, task);
  const auto pa = named_parameters(a.model());
  const auto pb = named_parameters(b.model());
  REQUIRE(pa.size() == pb.size());
  int redrawn = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    const std::string& name = pa[i].first;
    INFO(name);
    REQUIRE(pb[i].first == name);
    const float* x = pa[i].second.data();
    const float* y = pb[i].second.data();
    const int64_t n = pa[i].second.numel();
    if (name == "vision_tower.embeddings.position_embedding.weight") {
      double ss = 0;
      for (int64_t k = 0; k < n; ++k) ss += static_cast<double>(y[k]) * y[k];
      CHECK(std::sqrt(ss / static_cast<double>(n)) == Approx(3.0).epsilon(0.15));  // n = 160 draws
      ++redrawn;
    } else if (name == "multi_modal_projector.linear_1.weight") {
      for (int64_t k = 0; k < n; ++k) CHECK(y[k] == 0.0f);
      ++redrawn;
    } else {
      bool same = true;
      for (int64_t k = 0; k < n; ++k) same = same && x[k] == y[k];
      CHECK(same);
    }
  }
  CHECK(redrawn == 2);

  VlmSpec none = plain;
  none.init_std = {{"*perceiver*", 1.0}};
  CHECK_THROWS_WITH(Vlm(none, task), Catch::Contains("\"*perceiver*\" matches no parameter of llava"));
  VlmSpec both = plain;
  both.init_std = {{"*position_embedding*", 1.0}, {"vision_tower.*", 1.0}};
  CHECK_THROWS_WITH(Vlm(both, task), Catch::Contains("both match vision_tower.embeddings.position_embedding.weight"));
}

namespace {

// The parameters' values, in named_parameters order.
std::vector<std::vector<float>> param_values(Vlm& vlm) {
  std::vector<std::vector<float>> out;
  for (auto& [name, t] : named_parameters(vlm.model())) out.emplace_back(t.data(), t.data() + t.numel());
  return out;
}

// A deep copy of a checkpoint's state (the optimizer's moments are the optimizer's own tensors,
// which the next step changes in place).
TrainState deep_copy(const TrainState& st) {
  TrainState c = st;
  for (auto& s : c.optimizer) {
    if (!s.exp_avg.defined()) continue;
    Tensor m = Tensor::zeros(s.exp_avg.shape()), v = Tensor::zeros(s.exp_avg_sq.shape());
    std::copy(s.exp_avg.data(), s.exp_avg.data() + s.exp_avg.numel(), m.data());
    std::copy(s.exp_avg_sq.data(), s.exp_avg_sq.data() + s.exp_avg_sq.numel(), v.data());
    s.exp_avg = m;
    s.exp_avg_sq = v;
  }
  return c;
}

}  // namespace

TEST_CASE("Training: continued from a mid-run state, every family ends with the uninterrupted run's bits",
          "[training][resume]") {
  ToyTask task(true);
  const TrainOptions opt{.steps = 9, .batch_size = 4, .lr = 3e-3, .warmup_steps = 2};
  for (const std::string& family : kFamilies) {
    INFO(family);
    Vlm whole(tiny_spec(family, 5), task);
    TrainState full;
    std::vector<int> validated;
    TrainHooks hooks;
    hooks.eval_every = 4;
    hooks.validate = [&] {
      validated.push_back(full.steps_done);
      return evaluate(whole, task, data::Split::kValidation, 6, 3).scores;
    };
    std::optional<TrainState> at5;
    std::vector<std::vector<float>> params_at5;
    hooks.checkpoint_every = 5;
    hooks.checkpoint = [&](const TrainState& st) {
      at5 = deep_copy(st);
      params_at5 = param_values(whole);
    };
    train(whole, task, opt, full, hooks);
    // Validation before the first step, every 4 steps, after the last; one checkpoint (none after the last).
    CHECK(validated == std::vector<int>{0, 4, 8, 9});
    REQUIRE(full.curve.size() == 4);
    CHECK(full.curve[1].samples == 16);
    CHECK(full.curve[1].train_flops > 0);
    REQUIRE(at5);
    CHECK(at5->steps_done == 5);
    CHECK(at5->curve.size() == 2);  // steps 0 and 4

    // A fresh model (another init), the checkpoint's parameters and state put back, then continued.
    Vlm resumed(tiny_spec(family, 99), task);
    auto params = named_parameters(resumed.model());
    for (std::size_t i = 0; i < params.size(); ++i) std::copy(params_at5[i].begin(), params_at5[i].end(), params[i].second.data());
    TrainState st = *at5;
    TrainHooks again;
    again.eval_every = 4;
    again.validate = [&] { return evaluate(resumed, task, data::Split::kValidation, 6, 3).scores; };
    train(resumed, task, opt, st, again);
    REQUIRE(st.log.size() == full.log.size());
    for (std::size_t i = 0; i < st.log.size(); ++i) {
      CHECK(st.log[i].loss == full.log[i].loss);  // bit for bit
      CHECK(st.log[i].grad_norm == full.log[i].grad_norm);
      CHECK(st.log[i].flops == full.log[i].flops);
    }
    REQUIRE(st.curve.size() == full.curve.size());
    for (std::size_t i = 0; i < st.curve.size(); ++i) CHECK(st.curve[i].scores.back().correct == full.curve[i].scores.back().correct);
    CHECK(param_values(resumed) == param_values(whole));
    // Without the optimizer state the same parameters do not continue the same way.
    Vlm no_state(tiny_spec(family, 99), task);
    auto p2 = named_parameters(no_state.model());
    for (std::size_t i = 0; i < p2.size(); ++i) std::copy(params_at5[i].begin(), params_at5[i].end(), p2[i].second.data());
    TrainState bare = *at5;
    bare.optimizer.clear();
    train(no_state, task, opt, bare);
    CHECK(param_values(no_state) != param_values(whole));
  }
}

TEST_CASE("Evaluation: a subtype never asked has no row", "[training][eval]") {
  // The toy task names a second subtype that it never asks.
  class TwoSubtypes : public ToyTask {
   public:
    std::vector<std::string> subtypes() const override { return {"never", "colour"}; }
  } task;
  Vlm vlm(tiny_spec("fuyu"), task);
  const EvalResult r = evaluate(vlm, task, data::Split::kValidation, 8, 4);
  REQUIRE(r.scores.size() == 2);
  CHECK(r.scores[0].subtype == "colour");
  CHECK(r.scores[1].subtype == "all");
  CHECK(r.split == "validation");
}

TEST_CASE("Kept model: saved and reloaded, every family gives the same logits and answers", "[training][keep]") {
  ToyTask task(true);
  const std::string root = std::filesystem::temp_directory_path() / ("vlmlab_keep_" + std::to_string(::getpid()));
  for (const std::string& family : kFamilies) {
    INFO(family);
    Vlm vlm(tiny_spec(family, 3), task);
    TrainState st;
    train(vlm, task, TrainOptions{.steps = 3, .batch_size = 4}, st);
    const std::string dir = root + "/" + family;
    vlm.save(dir, {{"run_id", "x"}});
    Vlm back(dir, task);
    CHECK(back.family() == family);
    std::vector<data::Sample> samples;
    for (uint64_t i = 0; i < 5; ++i) samples.push_back(task.sample(data::Split::kTest, i));
    NoGradGuard no_grad;
    const Tensor a = vlm.loss(vlm.train_batch(samples), true), b = back.loss(back.train_batch(samples), true);
    CHECK(a.item() == b.item());
    const EvalResult ea = evaluate(vlm, task, data::Split::kTest, 12, 5), eb = evaluate(back, task, data::Split::kTest, 12, 5);
    for (std::size_t i = 0; i < ea.items.size(); ++i) CHECK(ea.items[i].prediction == eb.items[i].prediction);
    // Another task's vocabulary is refused, naming the difference.
    class OtherWords : public ToyTask {
     public:
      std::vector<std::string> vocabulary() const override { return {"what", "colour", "?", "dark", "red", "pink"}; }
    } other;
    CHECK_THROWS_WITH(Vlm(dir, other), Catch::Contains("vocabulary differs from task toy's at id 13"));
  }
  std::filesystem::remove_all(root);
}

// ---- stages: frozen parts, learning-rate multipliers, weights from another model ----

namespace {

// The names of a component's parameters, and their values.
std::set<std::string> names_in(Vlm& vlm, const std::string& selector) {
  const auto v = select_parameters(vlm.model(), selector);
  return {v.begin(), v.end()};
}

}  // namespace

TEST_CASE("Stages: a frozen part is bit-identical after training, gets no gradient buffer or optimizer "
          "state, and its branch costs no backward work", "[training][stages]") {
  ToyTask task;
  for (const std::string& family : kFamilies) {
    INFO(family);
    // Freeze the tower (fuyu has none: freeze its LM instead); everything else trains.
    const std::string frozen_part = family == "fuyu" ? "lm" : "vision";
    Vlm vlm(tiny_spec(family, 3), task);
    const std::set<std::string> frozen = names_in(vlm, frozen_part);
    REQUIRE(!frozen.empty());
    const auto before = param_values(vlm);
    TrainOptions opt{.steps = 3, .batch_size = 4, .lr = 1e-2, .warmup_steps = 0};
    opt.frozen.assign(frozen.begin(), frozen.end());
    int64_t trained_bytes = 0;
    for (const auto& [name, t] : named_parameters(vlm.model()))
      if (!frozen.count(name)) trained_bytes += t.numel() * static_cast<int64_t>(sizeof(float));
    TrainState state;
    TrainHooks hooks;
    std::optional<TrainState> at2;
    hooks.checkpoint_every = 2;
    hooks.checkpoint = [&](const TrainState& st) { at2 = deep_copy(st); };
    reset_peak_memory();
    const MemStats start = memory_stats();
    train(vlm, task, opt, state, hooks);
    const MemStats m = memory_stats();
    // Gradient buffers and AdamW's two moments exist for the trained parameters only.
    CHECK(m.peak_of(MemCat::kGradients) - start.peak_of(MemCat::kGradients) == trained_bytes);
    CHECK(m.peak_of(MemCat::kOptimizer) - start.peak_of(MemCat::kOptimizer) == 2 * trained_bytes);
    const auto after = param_values(vlm);
    const auto params = named_parameters(vlm.model());
    REQUIRE(at2);
    for (std::size_t i = 0; i < params.size(); ++i) {
      INFO(params[i].first);
      if (frozen.count(params[i].first)) {
        CHECK(after[i] == before[i]);  // bit for bit
        CHECK(!at2->optimizer[i].exp_avg.defined());
        CHECK(params[i].second.requires_grad());  // frozen for the stage only
      } else {
        CHECK(at2->optimizer[i].exp_avg.defined());
      }
    }
    CHECK(after != before);
  }
  // The backward pass skips a branch only frozen parameters feed: a frozen tower costs its forward only.
  Vlm a(tiny_spec("llava", 3), task), b(tiny_spec("llava", 3), task);
  TrainOptions all{.steps = 1, .batch_size = 4}, tower_frozen = all;
  const auto tower = names_in(b, "vision");
  tower_frozen.frozen.assign(tower.begin(), tower.end());
  TrainState sa, sb;
  train(a, task, all, sa);
  train(b, task, tower_frozen, sb);
  CHECK(sb.log[0].flops < sa.log[0].flops);
  CHECK(sb.log[0].loss == sa.log[0].loss);  // the same forward
}

TEST_CASE("Stages: a parameter's learning-rate multiplier scales its update (0: unchanged)", "[training][stages]") {
  ToyTask task;
  Vlm plain(tiny_spec("llava", 4), task), scaled(tiny_spec("llava", 4), task);
  const std::set<std::string> tower = names_in(scaled, "vision");
  TrainOptions opt{.steps = 2, .batch_size = 4, .lr = 1e-2, .warmup_steps = 0};
  TrainOptions with = opt;
  for (const std::string& n : tower) with.lr_scale[n] = 0.0;
  const auto before = param_values(scaled);
  TrainState s1, s2;
  train(plain, task, opt, s1);
  train(scaled, task, with, s2);
  const auto p = param_values(plain), q = param_values(scaled);
  const auto params = named_parameters(scaled.model());
  int moved = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].first);
    if (tower.count(params[i].first)) {
      CHECK(q[i] == before[i]);  // at 0x it does not move, weight decay included
      moved += p[i] != before[i] ? 1 : 0;
    }
  }
  CHECK(moved > 0);  // at 1x the tower trains
  CHECK(s1.log[0].loss == s2.log[0].loss);
}

TEST_CASE("Stages: steps continue the run's step count and data stream; a stage continued from a "
          "mid-stage state ends with the uninterrupted run's bits", "[training][stages]") {
  ToyTask task(true);
  const auto stage_opts = [&](Vlm& vlm) {
    TrainOptions one{.steps = 4, .batch_size = 4, .lr = 3e-3, .warmup_steps = 1};
    one.checkpoint_last = true;
    const auto lm = names_in(vlm, "lm");
    one.frozen.assign(lm.begin(), lm.end());
    TrainOptions two{.steps = 5, .batch_size = 4, .lr = 1e-3, .warmup_steps = 1};
    two.first_step = two.data_first_step = 4, two.stage = 1, two.samples_before = 16;
    return std::make_pair(one, two);
  };
  Vlm whole(tiny_spec("qwen2vl", 8), task);
  const auto [one, two] = stage_opts(whole);
  TrainState full;
  std::optional<TrainState> at6;
  std::vector<std::vector<float>> params_at6;
  TrainHooks hooks;
  hooks.checkpoint_every = 3;
  hooks.checkpoint = [&](const TrainState& st) {
    if (st.steps_done == 6) at6 = deep_copy(st), params_at6 = param_values(whole);
  };
  hooks.eval_every = 2;
  hooks.validate = [&] { return evaluate(whole, task, data::Split::kValidation, 4, 4).scores; };
  train(whole, task, one, full, hooks);
  train(whole, task, two, full, hooks);
  REQUIRE(full.log.size() == 9);
  CHECK(full.log[4].step == 4);
  CHECK(full.log[3].stage == 0);
  CHECK(full.log[4].stage == 1);
  // Each stage is validated when it begins, every 2 of its steps and at its end.
  std::vector<std::pair<int, int>> points;
  for (const CurvePoint& p : full.curve) points.emplace_back(p.stage, p.step);
  CHECK(points == std::vector<std::pair<int, int>>{{0, 0}, {0, 2}, {0, 4}, {1, 4}, {1, 6}, {1, 8}, {1, 9}});
  CHECK(full.curve.back().samples == 36);
  // Stage 2 alone from the state at step 6 (a fresh model, the checkpoint's parameters put back).
  REQUIRE(at6);
  Vlm resumed(tiny_spec("qwen2vl", 99), task);
  auto params = named_parameters(resumed.model());
  for (std::size_t i = 0; i < params.size(); ++i) std::copy(params_at6[i].begin(), params_at6[i].end(), params[i].second.data());
  TrainState st = *at6;
  const auto [one_r, two_r] = stage_opts(resumed);
  TrainHooks again;
  again.eval_every = 2;
  again.validate = [&] { return evaluate(resumed, task, data::Split::kValidation, 4, 4).scores; };
  train(resumed, task, one_r, st, again);  // finished before the checkpoint: does nothing
  train(resumed, task, two_r, st, again);
  REQUIRE(st.log.size() == full.log.size());
  for (std::size_t i = 0; i < st.log.size(); ++i) CHECK(st.log[i].loss == full.log[i].loss);
  CHECK(param_values(resumed) == param_values(whole));
}

TEST_CASE("init_from: llava's CLIP tower moved into flamingo gives flamingo the tower outputs it gave "
          "llava; a part that does not match is refused naming the parameter", "[training][stages][transfer]") {
  ToyTask task;
  VlmSpec ls = tiny_spec("llava", 11);
  ls.family_keys = {{"vision_feature_layer", -1}, {"vision_feature_select_strategy", "full"}};
  Vlm llava(ls, task);
  const std::string dir = (std::filesystem::temp_directory_path() / ("vlm_transfer_" + std::to_string(getpid()))).string();
  llava.save(dir);
  VlmSpec fs = tiny_spec("flamingo", 12);
  fs.family_keys = {{"use_resampler", false}};
  {  // IDEFICS's tower defaults to gelu, CLIP's to quick_gelu: refused until they agree.
    Vlm gelu(fs, task);
    CHECK_THROWS_WITH(init_from(gelu.model(), "vision", dir, "x"),
                      Catch::Contains("vision_config.hidden_act") && Catch::Contains("quick_gelu"));
  }
  fs.family_keys["vision_config.hidden_act"] = "quick_gelu";
  Vlm flamingo(fs, task);
  const auto before_lm = param_values(flamingo);
  const InitResult r = init_from(flamingo.model(), "vision", dir, "test");
  CHECK(r.source_family == "llava");
  CHECK(r.names.size() == select_parameters(flamingo.model(), "vision").size());

  const data::Sample s = task.sample(data::Split::kTest, 0);
  const Inputs li = llava.processor().make_inputs({llava.prompt(s)});
  Inputs fi = flamingo.processor().make_inputs({flamingo.prompt(s)});
  const Tensor px = li.floats("pixel_values");  // [1, 3, H, W]; flamingo's is [B, N, 3, H, W]
  fi.set_floats("pixel_values", reshape(px, {1, 1, px.dim(1), px.dim(2), px.dim(3)}));
  NoGradGuard no_grad;
  const Tensor ours = flamingo.model().forward(fi).stages.at("image_features");
  const Tensor theirs = llava.model().forward(li).stages.at("vision_hidden_states");
  REQUIRE(ours.numel() == theirs.numel());
  CHECK(std::equal(ours.data(), ours.data() + ours.numel(), theirs.data()));
  // Nothing outside the tower moved.
  const auto after = param_values(flamingo);
  const auto params = named_parameters(flamingo.model());
  const auto tower = names_in(flamingo, "vision");
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!tower.count(params[i].first)) CHECK(after[i] == before_lm[i]);

  // qwen2vl's LM has q/k/v biases llava's Llama lacks; a wider tower does not fit.
  Vlm qwen(tiny_spec("qwen2vl", 1), task);
  CHECK_THROWS_WITH(init_from(qwen.model(), "lm", dir, "stage[0].init_from.lm"),
                    Catch::Contains("stage[0].init_from.lm") && Catch::Contains("q_proj.bias") &&
                        Catch::Contains("no counterpart"));
  VlmSpec wide = fs;
  wide.sizes.vision.hidden_size = 48;
  wide.sizes.vision.intermediate_size = 96;
  Vlm other(wide, task);
  CHECK_THROWS_WITH(init_from(other.model(), "vision", dir, "x"),
                    Catch::Contains("[48]") && Catch::Contains("[32]") && Catch::Contains("sizes differ"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("ModelSizes::initializer_range: one value reaches every initializer_range key of every family, "
          "and the weights' spread follows it", "[training][init]") {
  ToyTask task;
  for (const FamilyEntry& f : families()) {
    INFO(f.name);
    ModelSizes sizes = tiny_sizes();
    sizes.vocab_size = 16;
    sizes.initializer_range = 0.3;
    const nlohmann::json cfg = f.build_config(sizes, nlohmann::json::object());
    int found = 0;
    std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& j) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "initializer_range") {
          CHECK(it.value().get<double>() == 0.3);
          ++found;
        }
        if (it.value().is_object()) walk(it.value());
      }
    };
    walk(cfg);
    CHECK(found >= 2);
    // The LM's embedding is drawn at that std (within sampling error).
    VlmSpec a = tiny_spec(std::string(f.name), 2), b = a;
    b.sizes.initializer_range = 0.3;
    Vlm va(a, task), vb(b, task);
    const auto spread = [](Vlm& v) {
      for (auto& [name, t] : named_parameters(v.model()))
        if (name.find("embed_tokens.weight") != std::string::npos) {
          double s = 0;
          for (int64_t k = 0; k < t.numel(); ++k) s += static_cast<double>(t.data()[k]) * t.data()[k];
          return std::sqrt(s / static_cast<double>(t.numel()));
        }
      return 0.0;
    };
    CHECK(spread(va) == Approx(0.02).epsilon(0.2));
    CHECK(spread(vb) == Approx(0.3).epsilon(0.2));
  }
}

TEST_CASE("A family's own special tokens come after every task word: no shared or task id moves",
          "[training][vocab]") {
  ToyTask task;
  const data::Vocab plain = task_vocab(task);
  static constexpr std::array<std::string_view, 2> kOwn = {"<query>", "<query_end>"};
  SpecialTokens tokens;
  const data::Vocab with = family_vocab(task, {}, kOwn, &tokens);
  REQUIRE(with.size() == plain.size() + 2);
  for (int64_t i = 0; i < plain.size(); ++i) CHECK(with.word(i) == plain.word(i));
  CHECK(tokens.own.at("<query>") == plain.size());
  CHECK(tokens.own.at("<query_end>") == plain.size() + 1);
  CHECK(with.word(tokens.own.at("<query>")) == "<query>");
  // The registry's families have none: their vocabularies are the task's.
  for (const FamilyEntry& f : families()) {
    SpecialTokens t;
    CHECK(family_vocab(task, {}, f.own_tokens, &t).size() == plain.size());
    CHECK(t.own.empty());
  }
}
