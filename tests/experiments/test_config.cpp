// The experiment TOML as a careless or hostile user writes it (issue 26): every bad file is a
// ConfigError (exit 2) in `file:line:col: key: what` form, raised by load_experiment, which both
// `vlmlab check` and `vlmlab run` call before anything runs.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "experiments/config.h"

namespace fs = std::filesystem;
using Catch::Contains;
using Catch::StartsWith;
using vlm::ConfigError;

namespace {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("vlm_exp_test_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string dir() const { return path_.string(); }

 private:
  fs::path path_;
};

// A small valid experiment (2 variants); `name` and `extra` (appended) vary per test.
std::string experiment(const std::string& name, const std::string& extra) {
  return "[experiment]\nname = \"" + name +
         "\"\n"
         "[task]\nname = \"sort_of_clevr\"\nimage_size = 30\n"
         "[train]\nsteps = 2\nbatch_size = 2\n"
         "[model.text]\nhidden_size = 16\nnum_hidden_layers = 1\nnum_attention_heads = 2\n"
         "[model.vision]\nhidden_size = 16\nnum_hidden_layers = 1\nnum_attention_heads = 2\npatch_size = 15\n"
         "[[variant]]\nfamily = \"llava\"\n"
         "[[variant]]\nfamily = \"fuyu\"\n" +
         extra;
}

// The ConfigError message load_experiment gives for the text, or "loaded N runs".
std::string load(const TempDir& dir, const std::string& text) {
  const std::string path = dir.file("exp.toml");
  std::ofstream(path, std::ios::binary) << text;
  try {
    return "loaded " + std::to_string(vlm::exp::load_experiment(path).runs.size()) + " runs";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

}  // namespace

TEST_CASE("a valid sweep loads", "[experiments][config]") {
  TempDir dir;
  CHECK(load(dir, experiment("ok", "[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n")) == "loaded 4 runs");
  CHECK(load(dir, experiment("ok", "[sweep]\n\"train.batch_size\" = [2, 4]\n\"task.image_size\" = [30, 45]\n")) ==
        "loaded 8 runs");
}

TEST_CASE("sweep keys that crashed check and run are errors naming the key", "[experiments][config]") {
  TempDir dir;
  const std::string f = dir.file("exp.toml");
  // An empty key (segfault: parts.back() of no parts).
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"\" = [1]\n")),
             StartsWith(f + ":23:6: sweep.\"\": expected a dotted key path"));
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"train.\" = [1]\n")), Contains("sweep.\"train.\": expected a dotted"));
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"train..lr\" = [1]\n")), Contains("with no empty part"));
  // Through a variant's string (segfault: a string taken for a table).
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"variant.family.x\" = [1]\n")),
             StartsWith(f + ":23:22: sweep.variant.family.x: variant[0].family is a string, not a table"));
  // Through [task]'s string: was accepted and changed nothing.
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"task.name.x\" = [1]\n")),
             StartsWith(f + ":23:17: sweep.task.name.x: task.name is a string, not a table"));
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"train.steps.x\" = [1]\n")),
             Contains("train.steps is an integer, not a table"));
}

TEST_CASE("a sweep value listed twice is an error", "[experiments][config]") {
  TempDir dir;
  // Two runs with one id: both trained, one kept.
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"train.lr\" = [1e-3, 1e-3]\n")),
             StartsWith(dir.file("exp.toml") + ":23:21: sweep.train.lr: lists the value 0.001 twice"));
  CHECK_THAT(load(dir, experiment("e", "[sweep]\n\"train.lr\" = [0.001, 1e-3]\n")), Contains("lists the value 0.001 twice"));
}

TEST_CASE("names that cannot be files are refused by check", "[experiments][config]") {
  TempDir dir;
  // 300 characters passed check and failed run (results/NAME.h5 is longer than NAME_MAX).
  CHECK_THAT(load(dir, experiment(std::string(300, 'n'), "")),
             StartsWith(dir.file("exp.toml") + ":2:8: experiment.name: is 300 characters long; at most 100"));
  CHECK(load(dir, experiment(std::string(100, 'n'), "")) == "loaded 2 runs");
  CHECK_THAT(load(dir, experiment("e", "[[variant]]\nfamily = \"llava\"\nname = \"" + std::string(101, 'v') + "\"\n")),
             Contains("variant[2].name: is 101 characters long; at most 100"));
  // Long sweep values make long run ids.
  const std::string long_variant = "[[variant]]\nfamily = \"llava\"\nname = \"" + std::string(100, 'v') + "\"\n";
  const std::string long_sweep =
      "[sweep]\n\"train.lr\" = [0.0012345678901234]\n\"train.min_lr\" = [0.00012345678901234]\n"
      "\"train.weight_decay\" = [0.012345678901234]\n\"train.beta1\" = [0.91234567890123]\n"
      "\"train.beta2\" = [0.991234567890123]\n\"train.grad_clip\" = [1.2345678901234]\n";
  CHECK(load(dir, experiment("e", long_sweep)) == "loaded 2 runs");
  CHECK_THAT(load(dir, experiment("e", long_variant + long_sweep)),
             Contains(": sweep: run id \"vvvv") && Contains("characters long; at most 200"));
}

TEST_CASE("a directory given as the experiment says so", "[experiments][config]") {
  TempDir dir;
  try {
    vlm::exp::load_experiment(dir.dir());
    FAIL("a directory loaded");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == dir.dir() + ": is a directory; give the experiment's TOML file");
  }
}

TEST_CASE("long keys and values are cut in messages", "[experiments][config]") {
  TempDir dir;
  const std::string huge(100'000, 'k');
  std::string msg = load(dir, experiment("e", "[sweep]\n\"" + huge + "..x\" = [1]\n"));
  CHECK_THAT(msg, Contains("kkk...") && Contains("with no empty part"));
  CHECK(msg.size() < 1000);
  msg = load(dir, "[experiment]\nname = \"e\"\n" + huge + " = 1\n");
  CHECK_THAT(msg, Contains("experiment.kkk") && Contains("...: unknown key"));
  CHECK(msg.size() < 1000);
  msg = load(dir, "[experiment]\nname = \"" + huge + "!\"\n");
  CHECK(msg.size() < 1000);
}

TEST_CASE("TOML sizes inside their ranges but too large for memory are refused before building", "[experiments][config]") {
  TempDir dir;
  // 1,024 layers x 1,048,576 intermediate at width 65,536 (each inside its range): 2e14 parameters.
  std::string text = experiment("e", "");
  const std::string from = "[model.text]\nhidden_size = 16\nnum_hidden_layers = 1\n";
  text.replace(text.find(from), from.size(),
               "[model.text]\nhidden_size = 65536\nnum_hidden_layers = 1024\nintermediate_size = 1048576\n");
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = load(dir, text);
  CHECK_THAT(msg, Contains("variant[0] (llava)") && Contains("makes a model of") && Contains("more than the memory budget"));
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 5.0);
}

TEST_CASE("[train] precision is fp32 unless bf16 is asked for; anything else names the key", "[experiments][config]") {
  TempDir dir;
  const std::string path = dir.file("exp.toml");
  std::ofstream(path, std::ios::binary) << experiment("prec", "[sweep]\n\"train.precision\" = [\"fp32\", \"bf16\"]\n");
  const auto runs = vlm::exp::load_experiment(path).runs;
  REQUIRE(runs.size() == 4);
  int bf16 = 0;
  for (const auto& r : runs) bf16 += r.config.train.precision == "bf16";
  CHECK(bf16 == 2);
  std::ofstream(path, std::ios::binary) << experiment("prec", "");
  CHECK(vlm::exp::load_experiment(path).runs.at(0).config.train.precision == "fp32");
  std::string fp16 = experiment("prec", "");
  fp16.replace(fp16.find("batch_size = 2\n"), 15, "batch_size = 2\nprecision = \"fp16\"\n");
  CHECK_THAT(load(dir, fp16), Contains("train.precision") && Contains("\"fp16\""));
}

TEST_CASE("a variant's set table gives its runs their own experiment keys, and only them", "[experiments][config]") {
  TempDir dir;
  const std::string path = dir.file("exp.toml");
  // fuyu (the last variant) at its own learning rate and initialisation range, over a sweep of seeds'
  // batch sizes: llava keeps [train]'s lr (2e-3 by default) and the default range.
  std::ofstream(path, std::ios::binary)
      << experiment("set", "set = { \"train.lr\" = 1e-4, \"model.initializer_range\" = 0.3 }\n"
                           "[sweep]\n\"train.batch_size\" = [2, 4]\n");
  const auto runs = vlm::exp::load_experiment(path).runs;
  REQUIRE(runs.size() == 4);
  for (const auto& r : runs) {
    const bool fuyu = r.variant.family == "fuyu";
    CHECK(r.config.train.lr == (fuyu ? 1e-4 : 2e-3));
    CHECK(r.config.train.min_lr == Approx(fuyu ? 1e-5 : 2e-4));
    CHECK(r.config.stages.at(0).train.lr == r.config.train.lr);
    CHECK(r.config.sizes.initializer_range == (fuyu ? 0.3 : vlm::ModelSizes{}.initializer_range));
    CHECK(r.vlm_spec().sizes.initializer_range == r.config.sizes.initializer_range);
    // The sweep still applies to it, and its resolved TOML (what the results file records) holds both.
    CHECK((r.config.train.batch_size == 2 || r.config.train.batch_size == 4));
    const auto again = vlm::exp::load_experiment_text(r.resolved_toml, "resolved.toml").runs;
    REQUIRE(again.size() == 1);
    CHECK(again[0].config.train.lr == r.config.train.lr);
    CHECK(again[0].config.sizes.initializer_range == r.config.sizes.initializer_range);
  }
  CHECK_THAT(load(dir, experiment("set", "set = { \"train.batch_size\" = 3 }\n[sweep]\n\"train.batch_size\" = [2, 4]\n")),
             Contains("variant[1].set.\"train.batch_size\": is also swept"));
  CHECK_THAT(load(dir, experiment("set", "set = { \"experiment.seeds\" = [1] }\n")),
             Contains("variant[1].set.\"experiment.seeds\": sets a key of [experiment]"));
  CHECK_THAT(load(dir, experiment("set", "set = { \"lr\" = 1e-3 }\n")), Contains("variant[1].set.\"lr\": expected a dotted key path"));
  CHECK_THAT(load(dir, experiment("set", "set = 3\n")), Contains("variant[1].set: expected a table"));
  // A value the key does not take is refused as [train] itself would refuse it, naming the variant.
  CHECK_THAT(load(dir, experiment("set", "set = { \"train.lr\" = -1.0 }\n")),
             Contains("variant[1].set") && Contains("train.lr"));
  CHECK_THAT(load(dir, experiment("set", "set = { \"train.lrr\" = 1.0 }\n")), Contains("did you mean \"lr\""));
}

TEST_CASE("a variant's set table reaches a [[stage]] by name: stage.NAME.key", "[experiments][config]") {
  TempDir dir;
  const std::string path = dir.file("exp.toml");
  const std::string stages = "[[stage]]\nname = \"align\"\nsteps = 1\n[[stage]]\nname = \"tune\"\nsteps = 1\n";
  // The shared experiment with its stages giving the steps ([train] steps is refused beside them).
  const auto staged = [](const std::string& extra) {
    std::string text = experiment("set", extra);
    text.replace(text.find("[train]\nsteps = 2\n"), 17, "[train]\n");
    return text;
  };
  // fuyu (the last variant) freezes its LM in the second stage only, at its own learning rate there.
  std::ofstream(path, std::ios::binary)
      << staged("set = { \"stage.tune.freeze\" = [\"lm\"], \"stage.tune.lr\" = 1e-4 }\n" + stages);
  const auto runs = vlm::exp::load_experiment(path).runs;
  REQUIRE(runs.size() == 2);
  for (const auto& r : runs) {
    const bool fuyu = r.variant.family == "fuyu";
    REQUIRE(r.config.stages.size() == 2);
    CHECK(r.config.stages[0].freezes.empty());
    CHECK(r.config.stages[0].train.lr == 2e-3);
    CHECK(r.config.stages[1].freezes == (fuyu ? std::vector<std::string>{"lm"} : std::vector<std::string>{}));
    CHECK(r.config.stages[1].train.lr == (fuyu ? 1e-4 : 2e-3));
    // The resolved TOML (what the results file records) loads to the same stages.
    const auto again = vlm::exp::load_experiment_text(r.resolved_toml, "resolved.toml").runs;
    REQUIRE(again.size() == 1);
    CHECK(again[0].config.stages[1].freezes == r.config.stages[1].freezes);
  }
  CHECK_THAT(load(dir, staged("set = { \"stage.nosuch.lr\" = 1e-4 }\n" + stages)),
             Contains("variant[1].set.\"stage.nosuch.lr\": no [[stage]] is named \"nosuch\" (the stages: \"align\", \"tune\")"));
  CHECK_THAT(load(dir, staged("set = { \"stage.tune\" = 1 }\n" + stages)),
             Contains("variant[1].set.\"stage.tune\": expected stage.NAME.key"));
  CHECK_THAT(load(dir, staged("set = { \"stage.tune.lr\" = 1e-4 }\n")),
             Contains("no [[stage]] is named \"tune\" (the experiment has no [[stage]])"));
  // A value the stage does not take is refused as the stage itself would refuse it, for the run it concerns.
  CHECK_THAT(load(dir, staged("set = { \"stage.tune.freeze\" = [\"*no_such*\"] }\n" + stages)),
             Contains("stage[1]") && Contains("\"*no_such*\" matches no parameter of fuyu") && Contains("(run fuyu-s0)"));
}
