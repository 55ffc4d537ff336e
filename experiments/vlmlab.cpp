// The vlmlab command line: `vlmlab <command> [options]`, each command with its own --help.
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "architectures/budget.h"
#include "architectures/parity.h"
#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "architectures/registry.h"
#include "training/evaluate.h"
#include "experiments/bench_model.h"
#include "experiments/config.h"
#include "experiments/demo.h"
#include "experiments/dist.h"
#include "experiments/results.h"
#include "experiments/runner.h"
#include "experiments/stages.h"
#include "lib/core/parallel.h"
#include "lib/core/suggest.h"
#include "lib/data/task.h"
#include "lib/core/check.h"
#include "lib/data/draw.h"
#include "lib/data/png.h"
#include "lib/io/h5.h"
#include "lib/io/hf_config.h"
#include "lib/io/safetensors.h"
#include "version.h"  // generated: experiments/meson.build

namespace po = boost::program_options;

namespace {

// Parses a subcommand's options, and its one positional argument when `positional` names it (stored
// in *value); returns false, having printed the options, when --help was asked.
bool parse_args(const std::vector<std::string>& args, const po::options_description& desc, po::variables_map& vm,
                const char* positional = nullptr, std::string* value = nullptr) {
  po::options_description all;
  all.add(desc);
  po::positional_options_description pos;
  if (positional) {
    po::options_description hidden;
    hidden.add_options()(positional, po::value<std::string>(value));
    all.add(hidden);
    pos.add(positional, 1);
  }
  // No abbreviations: with Boost's default style `--thread 1` is taken as `--threads 1`, and an option
  // added later could silently change what an abbreviation means. An unknown option names the nearest.
  const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).style(style).run(), vm);
  } catch (const po::unknown_option& e) {
    std::vector<std::string> names;
    for (const auto& o : desc.options()) names.push_back("--" + o->long_name());
    throw po::error(std::string(e.what()) + vlm::did_you_mean(e.get_option_name(), names));
  }
  if (vm.count("help")) {
    std::cout << desc;
    return false;
  }
  po::notify(vm);
  return true;
}

// --max-memory BYTES: the memory budget (architectures/budget.h) of this command, set while its
// options are read, so before anything is built. A number of bytes, optionally with a fraction and a
// suffix K, M, G or T (powers of 1024; "KB", "KiB" and lower case too): 4G, 512M, 1.5G, 1000000.
void set_max_memory(const std::string& text) {
  const std::string shown = text.size() > 64 ? text.substr(0, 64) + "..." : text;
  const auto refuse = [&](const std::string& why) {
    throw po::error("--max-memory \"" + shown + "\": " + why + " (a size such as 4G, 512M or 1000000)");
  };
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  const std::string number = text.substr(0, i);
  std::string suffix = text.substr(i);
  std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (number.empty() || number.front() == '.' || std::count(number.begin(), number.end(), '.') > 1)
    refuse("not a size");
  double scale = 1;
  if (!suffix.empty() && suffix != "B") {
    const std::string units = "KMGT";
    const std::size_t u = units.find(suffix[0]);
    const std::string rest = suffix.substr(1);
    if (u == std::string::npos || !(rest.empty() || rest == "B" || rest == "IB")) refuse("unknown suffix");
    scale = std::pow(1024.0, static_cast<double>(u + 1));
  }
  const double bytes = std::floor(std::strtod(number.c_str(), nullptr) * scale);
  if (!(bytes >= 1)) refuse("must be at least 1 byte");
  if (bytes > 9.0e18) refuse("too large");
  vlm::set_memory_budget(static_cast<int64_t>(bytes));
}

po::typed_value<std::string>* max_memory_option() { return po::value<std::string>()->notifier(&set_max_memory); }
constexpr const char* kMaxMemoryHelp =
    "memory budget for models, training and activations, e.g. 4G or 512M (default: half the machine's "
    "memory or its limits); what does not fit is refused (exit 2) before anything is built";

void usage() {
  std::puts(
      "usage: vlmlab <command> [options]\n"
      "commands:\n"
      "  run      run an experiment (TOML): train, evaluate and measure every run into HDF5\n"
      "  check    validate an experiment and list the runs it would make, without training\n"
      "  eval     score a model a run kept (results/<experiment>/models/<run>) on a task's test or validation split\n"
      "  report   write a comparison report (markdown + figures) from a results file\n"
      "  sample   draw a task's samples as PNG files, as the runs of an experiment saw them\n"
      "  list     families, projectors and tasks (with their parameters)\n"
      "  parity   compare a family with Hugging Face transformers on a fixture folder\n"
      "  demo     train and evaluate a tiny decoder with the core (a smoke test of the whole stack)\n"
      "  bench-model  export a family at a bench size and time training, prefill and decode (JSON)\n"
      "Run `vlmlab <command> --help` for a command's options; `vlmlab --version` prints the version.");
}

const std::vector<std::string> kCommands = {"run", "check", "eval", "report", "sample", "list", "parity", "demo",
                                            "bench-model"};

int cmd_demo(const std::vector<std::string>& args) {
  vlm::DemoOptions o;
  po::options_description desc("vlmlab demo [options]");
  desc.add_options()("help,h", "show this help")(
      "threads", po::value<int>(&o.threads)->default_value(o.threads), "threads for BLAS and the core's loops")(
      "steps", po::value<int>(&o.steps)->default_value(o.steps), "training steps")(
      "batch", po::value<int>(&o.batch)->default_value(o.batch), "batch size")(
      "layers", po::value<int>(&o.layers)->default_value(o.layers), "decoder layers")(
      "hidden", po::value<long long>(&o.hidden)->default_value(o.hidden), "hidden size (multiple of 8)")(
      "seed", po::value<unsigned long long>(&o.seed)->default_value(o.seed), "random seed")(
      "out", po::value<std::string>(&o.out_dir)->default_value(o.out_dir), "folder for the saved model");
  po::variables_map vm;
  if (!parse_args(args, desc, vm)) return 0;
  VLM_CHECK(o.threads >= 1, "--threads must be >= 1");
  VLM_CHECK(o.steps >= 1 && o.batch >= 1 && o.layers >= 1, "--steps, --batch and --layers must be >= 1");
  VLM_CHECK(o.hidden >= 8 && o.hidden % 8 == 0, "--hidden must be a positive multiple of 8");
  return vlm::run_demo(o);
}

int cmd_parity(const std::vector<std::string>& args) {
  std::string dir;
  double tol = 1e-4;
  po::options_description desc(
      "vlmlab parity DIR [options]\n"
      "DIR holds config.json, model.safetensors and io.safetensors (tests/parity/README.md).\n"
      "Prints one line per stage with its max |diff|; exit 0 when features and logits are within the\n"
      "tolerance and positions and generated tokens are identical, 1 otherwise, 2 for a config or\n"
      "folder it cannot run");
  desc.add_options()("help,h", "show this help")("tolerance", po::value<double>(&tol)->default_value(tol),
                                                 "max |diff| allowed on float stages")(
      "max-memory", max_memory_option(), kMaxMemoryHelp);
  po::variables_map vm;
  if (!parse_args(args, desc, vm, "dir", &dir)) return 0;
  if (dir.empty()) {
    std::fprintf(stderr, "vlmlab parity: missing DIR (see --help)\n");
    return 2;
  }
  vlm::ParityResult r;
  try {
    r = vlm::run_parity(dir, tol);
  } catch (const vlm::io::ConfigError& e) {
    std::fprintf(stderr, "vlmlab parity: cannot run %s: %s\n", dir.c_str(), e.what());
    return 2;
  } catch (const vlm::io::SafetensorsError& e) {
    std::fprintf(stderr, "vlmlab parity: %s\n", e.what());
    return 2;
  }
  std::printf("%s (%s)\n", dir.c_str(), r.family.c_str());
  for (const auto& s : r.stages) {
    if (s.exact)
      std::printf("  %-22s %s  %lld mismatches%s%s\n", s.name.c_str(), s.pass ? "PASS" : "FAIL",
                  static_cast<long long>(s.mismatches), s.note.empty() ? "" : "  ", s.note.c_str());
    else
      std::printf("  %-22s %s  max |diff| %.3g%s%s\n", s.name.c_str(), s.pass ? "PASS" : "FAIL", s.max_abs_diff,
                  s.note.empty() ? "" : "  ", s.note.c_str());
  }
  std::printf("%s\n", r.pass() ? "parity OK" : "parity FAILED");
  return r.pass() ? 0 : 1;
}

// Parses `vlmlab CMD EXP.toml [options]`; returns false (and prints help) when --help was asked.
bool parse_with_file(const std::vector<std::string>& args, po::options_description& desc, std::string& file,
                     po::variables_map& vm, const char* what = "the experiment file") {
  if (!parse_args(args, desc, vm, "file", &file)) return false;
  if (file.empty()) throw po::error(std::string("missing ") + what + " (see --help)");
  return true;
}

int cmd_run(const std::vector<std::string>& args) {
  vlm::exp::RunOptions o;
  std::string file;
  po::options_description desc(
      "vlmlab run EXP.toml [options]\n"
      "Trains, evaluates and measures every run of the experiment; each completed run is written\n"
      "durably to the results file before the next starts. Exit 0 when every run completed, 1 when\n"
      "some failed (recorded with their errors), 2 for an invalid config.\n"
      "Under `mpirun -n N` (a build with MPI) the runs are spread over the N ranks by estimated cost\n"
      "and rank 0 writes the one results file; runs with [train] data_parallel = true are trained by\n"
      "all ranks together, each computing its share of every batch");
  desc.add_options()("help,h", "show this help")(
      "out", po::value<std::string>(&o.out), "results file (default results/<experiment name>.h5)")(
      "threads", po::value<int>(&o.threads)->default_value(0), "threads (default: the experiment's)")(
      "only", po::value<std::string>(&o.only), "only runs whose id contains PATTERN (* matches anything)")(
      "resume", po::bool_switch(&o.resume), "keep the completed runs of an existing results file, do the rest")(
      "overwrite", po::bool_switch(&o.overwrite), "replace an existing results file")(
      "quiet", po::bool_switch(&o.quiet), "no progress output")(
      "max-memory", max_memory_option(), kMaxMemoryHelp);
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm)) return 0;
  if (o.threads < 0) throw po::error("--threads must be >= 1");
  if (o.resume && o.overwrite) throw po::error("--resume and --overwrite exclude each other");
  // Under mpirun every rank gets here; MPI runs until this returns (experiments/dist.h).
  const vlm::dist::Session mpi;
  const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(file, vlm::dist::size());
  return vlm::exp::run_experiment(exp, o);
}

int cmd_check(const std::vector<std::string>& args) {
  std::string file;
  int ranks = 1;
  bool params = false;
  po::options_description desc(
      "vlmlab check EXP.toml\n"
      "Validates the experiment (exit 2 with file:line:col on an error) and prints the runs it would\n"
      "make with their parameter counts and visual tokens (as the summary counts them), without\n"
      "training. Warns (stderr, still exit 0) where a processor crops, squeezes, upscales or leaves\n"
      "pixels no patch covers, and where the measured resolution does not represent the task's images");
  desc.add_options()("help,h", "show this help")(
      "ranks", po::value<int>(&ranks)->default_value(ranks), "validate for `mpirun -n RANKS` (data_parallel batches)")(
      "params", po::bool_switch(&params),
      "also list each run's parameters: HF name (what a variant's init_std globs match), shape, component")(
      "max-memory", max_memory_option(), kMaxMemoryHelp);
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm)) return 0;
  if (ranks < 1) throw po::error("--ranks must be >= 1");
  const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(file, ranks);
  std::printf("%s: experiment \"%s\", task %s, %zu run(s)\n", file.c_str(), exp.base.name.c_str(),
              exp.base.task.c_str(), exp.runs.size());
  std::printf("  %-40s %-9s %10s %10s %10s %10s %8s\n", "run", "family", "vision", "connector", "lm", "total",
              "vis.tok");
  // Warnings, each once with the runs it concerns: what the processor does to the task's largest
  // images, and where the measured (square) resolution does not represent them.
  std::vector<std::pair<std::string, std::vector<std::string>>> warnings;
  const auto warn = [&](const std::string& text, const std::string& run_id) {
    for (auto& [t, ids] : warnings)
      if (t == text) return ids.push_back(run_id);
    warnings.push_back({text, {run_id}});
  };
  for (const vlm::exp::RunSpec& r : exp.runs) {
    const auto task = vlm::data::make_task(r.config.task, r.config.task_params);
    std::vector<std::unique_ptr<vlm::data::Task>> stage_tasks;  // their words join the vocabulary, as in the run
    std::vector<const vlm::data::Task*> more;
    for (const vlm::exp::Stage& st : r.config.stages) {
      stage_tasks.push_back(vlm::exp::make_stage_task(st));
      more.push_back(stage_tasks.back().get());
    }
    vlm::Vlm v(r.vlm_spec(), *task, more);
    const vlm::ParamCounts c = v.param_counts();
    const auto [h, w] = task->max_image_size();
    // Visual tokens as the summary counts them: the first test sample, its images scaled to the first
    // [measure] resolution (experiments/runner.cpp), all its images together.
    const int64_t res = r.config.measure.resolutions.empty() ? h : r.config.measure.resolutions.front();
    const vlm::data::Sample first = vlm::exp::at_resolution(task->sample(vlm::data::Split::kTest, 0), res);
    int64_t tokens = 0;
    for (const vlm::data::Image& im : first.images) tokens += v.processor().image_cost(im.height, im.width).visual_tokens;
    std::printf("  %-40s %-9s %10lld %10lld %10lld %10lld %8lld\n", r.run_id.c_str(), r.variant.family.c_str(),
                static_cast<long long>(c.vision), static_cast<long long>(c.connector), static_cast<long long>(c.lm),
                static_cast<long long>(c.total()), static_cast<long long>(tokens));
    if (r.config.staged)  // what each stage trains for this family, or why the family skips it
      for (const vlm::exp::Stage& st : r.config.stages) {
        const vlm::exp::StagePlan plan = vlm::exp::plan_stage(v, st);
        if (plan.skipped)
          std::printf("      stage %-14s skipped: %s\n", st.name.c_str(), plan.reason.c_str());
        else
          std::printf("      stage %-14s %7d steps, trains %lld parameters, %lld frozen; %s\n", st.name.c_str(),
                      st.train.steps, static_cast<long long>(plan.trained_params),
                      static_cast<long long>(plan.frozen_params), st.task_text().c_str());
      }
    for (const std::string& text : v.processor().warnings(h, w)) warn(text, r.run_id);
    if (h != res || w != res) {
      std::ostringstream os;
      os << task->name() << "'s images are up to " << h << "x" << w << " (" << v.processor().image_cost(h, w).visual_tokens
         << " visual tokens an image for " << r.variant.family << "), but vis.tok, latency and memory are measured on "
         << res << "x" << res << " images ([measure] resolutions), which do not represent them";
      warn(os.str(), r.run_id);
    }
    if (!params) continue;
    for (const auto& [name, t] : vlm::named_parameters(v.model()))
      std::printf("      %-70s %-18s %s\n", name.c_str(), vlm::shape_str(t.shape()).c_str(),
                  vlm::component_of(v.model(), name).c_str());
  }
  std::printf("  (vis.tok: visual tokens of the first test sample at the first [measure] resolution, as the "
              "summary counts them)\n");
  for (const auto& [text, ids] : warnings) {
    std::string runs;
    for (const std::string& id : ids) runs += (runs.empty() ? "" : ", ") + id;
    if (ids.size() == exp.runs.size() && ids.size() > 1) runs = "every run";
    std::fprintf(stderr, "vlmlab check: warning: %s (%s)\n", text.c_str(), runs.c_str());
  }
  return 0;
}

// Words wrapped into lines of at most `chars` characters (a longer word is cut).
std::vector<std::string> wrap_words(const std::vector<std::string>& words, std::size_t chars) {
  std::vector<std::string> lines(1);
  for (const std::string& w : words) {
    if (w == vlm::data::kImageWord) continue;
    if (!lines.back().empty() && lines.back().size() + 1 + w.size() > chars) lines.emplace_back();
    if (!lines.back().empty()) lines.back() += ' ';
    lines.back() += w.substr(0, chars);
  }
  return lines;
}

// The sample's images side by side on a grey ground (which also frames them), each scaled up by a
// whole factor (nearest neighbour) to about 150 px so small task images stay visible in a report;
// with `caption`, the question (Q:) and answer (A:) below them in the built-in bitmap font, dark on the
// ground (capitals: the font draws lowercase as capitals).
vlm::data::Image sample_picture(const vlm::data::Sample& s, bool caption = false) {
  constexpr int64_t kTarget = 150, kGap = 4, kMinCaptionChars = 40;
  const vlm::data::Rgb ground{190, 190, 190};
  std::vector<int64_t> scale;
  int64_t width = kGap, height = 0;
  for (const vlm::data::Image& im : s.images) {
    const int64_t side = std::max<int64_t>(1, std::max(im.height, im.width));
    scale.push_back(std::max<int64_t>(1, (kTarget + side - 1) / side));
    width += im.width * scale.back() + kGap;
    height = std::max(height, im.height * scale.back());
  }
  std::vector<std::string> lines;
  if (caption) {
    width = std::max(width, 2 * kGap + vlm::data::text_width(kMinCaptionChars, 1));
    const auto chars = static_cast<std::size_t>((width - 2 * kGap + 1) / vlm::data::kGlyphAdvance);
    std::vector<std::string> q = {"Q:"}, a = {"A:"};
    q.insert(q.end(), s.prompt.begin(), s.prompt.end());
    a.insert(a.end(), s.answer.begin(), s.answer.end());
    lines = wrap_words(q, chars);
    for (std::string& l : wrap_words(a, chars)) lines.push_back(std::move(l));
  }
  constexpr int64_t kLine = vlm::data::kGlyphHeight + 3;
  vlm::data::Image out(height + 2 * kGap + static_cast<int64_t>(lines.size()) * kLine, width, ground);
  for (std::size_t i = 0; i < lines.size(); ++i)
    vlm::data::draw_text(out, lines[i], height + 2 * kGap + static_cast<int64_t>(i) * kLine, kGap, 1,
                         vlm::data::Rgb{20, 20, 20});
  int64_t x0 = kGap;
  for (std::size_t i = 0; i < s.images.size(); ++i) {
    const vlm::data::Image& im = s.images[i];
    const int64_t k = scale[i];
    for (int64_t y = 0; y < im.height * k; ++y)
      for (int64_t x = 0; x < im.width * k; ++x) out.set(kGap + y, x0 + x, im.at(y / k, x / k));
    x0 += im.width * k + kGap;
  }
  return out;
}

int cmd_sample(const std::vector<std::string>& args) {
  std::string file, run, out_dir = ".", split = "test";
  std::vector<int64_t> indices;
  int64_t count = 4;
  bool no_caption = false;
  po::options_description desc(
      "vlmlab sample EXP.toml [options]\n"
      "Draws samples of the experiment's task (with the task parameters of one of its runs) as PNG\n"
      "files, DIR/<split>_<index>.png, with the question and answer written under the images, and\n"
      "prints one tab-separated line per sample: index, subtype, question, answer, file. --count picks\n"
      "the first samples whose images differ (Sort-of-CLEVR asks 20 questions about each scene).\n"
      "Samples are a pure function of the task parameters, so these are the images the runs saw\n"
      "(`vlmlab report` draws its gallery this way, with --no-caption: its table holds the text)");
  desc.add_options()("help,h", "show this help")(
      "run", po::value<std::string>(&run), "the run whose task parameters to use (default: the first run)")(
      "split", po::value<std::string>(&split)->default_value(split), "train, validation or test")(
      "index", po::value<std::vector<int64_t>>(&indices)->multitoken(), "sample indices (default: see --count)")(
      "count", po::value<int64_t>(&count)->default_value(count),
      "when no --index is given: this many samples with distinct images, the first of the split")(
      "no-caption", po::bool_switch(&no_caption), "images only, without the question and answer under them")(
      "out", po::value<std::string>(&out_dir)->default_value(out_dir), "folder for the PNG files");
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm)) return 0;
  if (split != "train" && split != "validation" && split != "test")
    throw po::error("--split must be train, validation or test, got \"" + split.substr(0, 64) + "\"");
  if (indices.empty() && (count < 1 || count > 100000)) throw po::error("--count must be in [1, 100000]");
  for (const int64_t i : indices)
    if (i < 0) throw po::error("--index must be >= 0");
  const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(file);
  const vlm::exp::RunSpec* spec = exp.runs.empty() ? nullptr : &exp.runs.front();
  if (!run.empty()) {
    spec = nullptr;
    for (const vlm::exp::RunSpec& r : exp.runs)
      if (r.run_id == run) spec = &r;
    if (!spec) throw po::error("no run \"" + run + "\" in " + file + " (`vlmlab check` lists them)");
  }
  if (!spec) throw po::error(file + " makes no runs");
  const auto task = vlm::data::make_task(spec->config.task, spec->config.task_params);
  std::filesystem::create_directories(out_dir);
  const vlm::data::Split which = vlm::data::parse_split(split, "--split");
  if (indices.empty()) {
    // The first `count` samples whose images differ from every earlier pick's, looking at no more than
    // 1,000 indices per sample asked (a task with fewer distinct images gives what it has).
    std::vector<std::vector<vlm::data::Image>> seen;
    for (int64_t i = 0; static_cast<int64_t>(indices.size()) < count && i < 1000 * count; ++i) {
      vlm::data::Sample s = task->sample(which, static_cast<uint64_t>(i));
      if (std::find(seen.begin(), seen.end(), s.images) != seen.end()) continue;
      seen.push_back(std::move(s.images));
      indices.push_back(i);
    }
  }
  for (const int64_t i : indices) {
    const vlm::data::Sample s = task->sample(which, static_cast<uint64_t>(i));
    const std::string path = (std::filesystem::path(out_dir) / (split + "_" + std::to_string(i) + ".png")).string();
    vlm::data::write_png(path, sample_picture(s, !no_caption));
    std::printf("%lld\t%s\t%s\t%s\t%s\n", static_cast<long long>(i), s.subtype.c_str(), vlm::data::join_words(s.prompt).c_str(),
                vlm::data::join_words(s.answer).c_str(), path.c_str());
  }
  return 0;
}

// `vlmlab report`: checks the results file here (a clear error, exit 2), then hands it to
// scripts/report.py, which reads it with h5py and draws the figures with matplotlib. This binary is
// passed along for the gallery's images (`vlmlab sample`).
int cmd_report(const std::vector<std::string>& args) {
  std::string file, out;
  po::options_description desc(
      "vlmlab report RESULTS.h5 [options]\n"
      "Writes report.md and its figures (PNG) from a results file: what was run, accuracy per\n"
      "variant and subtype (mean and 95% confidence interval over seeds) beside chance and majority,\n"
      "parameters, visual/LM tokens, latency per phase, peak memory, training curves, a gallery of\n"
      "eval items with each variant's answers, and the failed runs with their errors. The same\n"
      "results file always gives the same report. Exit 0 when written, 2 for a missing or invalid\n"
      "results file, 1 when the report could not be made");
  desc.add_options()("help,h", "show this help")(
      "out", po::value<std::string>(&out), "folder for report.md and its figures (default results/<experiment name>/)");
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm, "the results file")) return 0;
  if (!std::filesystem::is_regular_file(file)) {
    std::fprintf(stderr, "vlmlab report: cannot open %s: no such file\n", file.c_str());
    return 2;
  }
  std::string name;
  try {
    const vlm::io::H5File f = vlm::io::H5File::open_read(file);
    const vlm::io::AttrValue version = f.attr("/", "schema_version");
    if (!std::holds_alternative<int64_t>(version) || std::get<int64_t>(version) != vlm::exp::kSchemaVersion)
      throw std::runtime_error("schema_version is not " + std::to_string(vlm::exp::kSchemaVersion));
    const vlm::io::AttrValue n = f.attr("/", "experiment_name");
    if (!std::holds_alternative<std::string>(n)) throw std::runtime_error("experiment_name is not a string");
    name = std::get<std::string>(n);
    f.read_table("/summary");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmlab report: %s is not a vlmlab results file (HDF5 schema %lld): %s\n", file.c_str(),
                 static_cast<long long>(vlm::exp::kSchemaVersion), e.what());
    return 2;
  }
  if (out.empty()) out = "results/" + name;
  const std::string script = std::string(VLMLAB_SOURCE_DIR) + "/scripts/report.py";
  if (!std::filesystem::is_regular_file(script)) {
    std::fprintf(stderr, "vlmlab report: cannot find %s (the source tree this binary was built from)\n",
                 script.c_str());
    return 1;
  }
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  std::vector<std::string> argv_s = {VLMLAB_PYTHON, script, file, "--out", out};
  if (!ec) {
    argv_s.push_back("--vlmlab");
    argv_s.push_back(self);
  }
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  execvp(argv[0], argv.data());
  std::fprintf(stderr, "vlmlab report: cannot run %s: %s\n", VLMLAB_PYTHON, std::strerror(errno));
  return 1;
}

int cmd_bench_model(const std::vector<std::string>& args) {
  vlm::exp::BenchModelOptions o;
  po::options_description desc(
      "vlmlab bench-model [options]\n"
      "Builds FAMILY at a bench size on Sort-of-CLEVR samples (small: experiments/quickstart.toml's\n"
      "sizes; large: the same at hidden size 256), optionally exports it, and times a training step\n"
      "(forward, loss, backward, AdamW) at --batch, prefill at batch 1 and greedy decode per token with\n"
      "the KV cache; train_gemms times the training step's matrix products alone (its gemm() calls\n"
      "recorded, then replayed on operands of their own: the floor they set under the step's time).\n"
      "Prints one JSON object: sizes, counted FLOPs per timed thing, and each repeat's\n"
      "milliseconds. --export DIR writes config.json and model.safetensors (read back for everything\n"
      "after), io.safetensors (the training batch's inputs, labels, loss, logits and generated tokens,\n"
      "in the parity fixture layout: `vlmlab parity DIR` checks it) and prefill.safetensors (the batch-1\n"
      "prompt, its logits and the tokens the cached greedy decode makes). bench/torch_reference.py\n"
      "drives it");
  desc.add_options()("help,h", "show this help")(
      "family", po::value<std::string>(&o.family)->default_value(o.family), "family (vlmlab list)")(
      "size", po::value<std::string>(&o.size)->default_value(o.size), "small or large")(
      "threads", po::value<int>(&o.threads)->default_value(o.threads), "threads for the core (BLAS runs inside them)")(
      "batch", po::value<int>(&o.batch)->default_value(o.batch), "training batch")(
      "export", po::value<std::string>(&o.export_dir), "folder to export the model and its inputs to")(
      "time", po::value<std::string>(&o.time), "what to time: train,train_gemms,prefill,decode (comma separated)")(
      "warmup", po::value<int>(&o.warmup)->default_value(o.warmup), "untimed repeats first")(
      "repeats", po::value<int>(&o.repeats)->default_value(o.repeats), "timed repeats")(
      "decode-tokens", po::value<int>(&o.decode_tokens)->default_value(o.decode_tokens), "tokens per decode repeat")(
      "trace-steps", po::value<int>(&o.trace_steps)->default_value(0),
      "with --export: train this many steps on the exported batch and write their losses to DIR/trace.safetensors")(
      "max-memory", max_memory_option(), kMaxMemoryHelp);
  po::variables_map vm;
  if (!parse_args(args, desc, vm)) return 0;
  return vlm::exp::run_bench_model(o);
}

// A task's parameters from JSON (vlmlab.json of a kept model): integers, numbers, booleans, strings.
vlm::data::Params params_of_json(const nlohmann::json& j, const std::string& where) {
  vlm::data::Params p;
  if (!j.is_object()) throw vlm::ConfigError(where + ": task params must be an object");
  for (const auto& [k, v] : j.items()) {
    if (v.is_number_integer()) p[k] = v.get<int64_t>();
    else if (v.is_number()) p[k] = v.get<double>();
    else if (v.is_boolean()) p[k] = v.get<bool>();
    else if (v.is_string()) p[k] = v.get<std::string>();
    else throw vlm::ConfigError(where + ": task param " + k + " is not a number, boolean or string");
  }
  return p;
}

// `vlmlab eval --export`: the kept model's files and one unpadded batch (rows of one length: HF's
// forward without position_ids reads positions as 0..T-1, which only an unpadded row shares with
// generate) with vlmlab's logits and greedy tokens, in the parity fixture layout.
void export_fixture(vlm::Vlm& model, const vlm::data::Task& task, vlm::data::Split split, const std::string& from,
                    const std::string& dir) {
  std::vector<vlm::MultimodalSample> rows;
  for (uint64_t i = 0; i < 64 && rows.size() < 4; ++i) {
    vlm::MultimodalSample m = model.prompt(task.sample(split, i));
    if (rows.empty() || m.ids.size() == rows.front().ids.size()) rows.push_back(std::move(m));
  }
  const vlm::Inputs in = model.processor().make_inputs(rows);
  model.save(dir);
  std::filesystem::copy_file(from + "/vlmlab.json", dir + "/vlmlab.json",
                             std::filesystem::copy_options::overwrite_existing);
  vlm::NoGradGuard no_grad;
  const vlm::ForwardOutput fwd = model.model().forward(in);
  std::map<std::string, vlm::io::RawTensor> io_t = in.to_safetensors().tensors;
  const std::vector<float> logits = fwd.logits.to_vector();
  io_t["logits"] = vlm::io::raw_f32(fwd.logits.shape(), logits);
  vlm::GenerateOptions g;
  g.max_new_tokens = g.min_new_tokens = 3;  // as the fixtures' HF generate(min = max new tokens)
  const vlm::io::HfConfig gen_cfg(vlm::generation_config(model.model().config()), dir + "/generation_config.json");
  g.eos_token_ids = gen_cfg.get_int_list("eos_token_id", {});
  g.pad_token_id = gen_cfg.get_int("pad_token_id", 0);
  std::vector<int64_t> gen;
  for (const auto& row : vlm::greedy_generate(model.model(), in, g)) gen.insert(gen.end(), row.begin(), row.end());
  io_t["generated"] = vlm::io::raw_i64({static_cast<int64_t>(rows.size()), 3}, gen);
  vlm::io::write_safetensors(dir + "/io.safetensors", io_t, {{"family", model.family()}, {"made_by", "vlmlab eval --export"}});
}

int cmd_eval(const std::vector<std::string>& args) {
  std::string dir, task_name, experiment, export_dir, split = "test";
  int64_t samples = 0;
  int batch = 0, threads = 0;
  bool json = false;
  po::options_description desc(
      "vlmlab eval MODEL_DIR [options]\n"
      "Scores a model a completed run kept (results/<experiment>/models/<run_id>/: config.json,\n"
      "model.safetensors, vlmlab.json) without training: greedy answers, exact match, per subtype and\n"
      "overall, beside the majority and chance baselines. By default on the run's own task, test split,\n"
      "sample count, batch size and thread count, which gives the run's test accuracy exactly. Exit 0\n"
      "when scored, 2 for a bad folder or option");
  desc.add_options()("help,h", "show this help")(
      "task", po::value<std::string>(&task_name), "score on this task with its default parameters instead")(
      "experiment", po::value<std::string>(&experiment), "score on this experiment's [task] and [eval] instead")(
      "split", po::value<std::string>(&split)->default_value(split), "test or validation")(
      "samples", po::value<int64_t>(&samples), "items scored (default: the run's [eval] samples)")(
      "batch-size", po::value<int>(&batch), "eval batch (default: the run's)")(
      "threads", po::value<int>(&threads), "threads (default: the run's)")(
      "json", po::bool_switch(&json), "print one JSON object instead of a table")(
      "export", po::value<std::string>(&export_dir),
      "also write a parity fixture to this folder: the model's files and io.safetensors (the inputs of the "
      "first scored items of one prompt length, up to 4, with vlmlab's logits and greedy tokens); "
      "tests/parity/make_trained_fixtures.py puts transformers' outputs in it, `vlmlab parity` compares")(
      "max-memory", max_memory_option(), kMaxMemoryHelp);
  po::variables_map vm;
  if (!parse_with_file(args, desc, dir, vm, "the model folder")) return 0;
  if (split != "test" && split != "validation")
    throw po::error("--split must be test or validation, got \"" + split.substr(0, 64) + "\" (the train split is "
                    "what the model was trained on)");
  if (!task_name.empty() && !experiment.empty()) throw po::error("give --task or --experiment, not both");
  const std::string meta_path = dir + "/vlmlab.json";
  if (!std::filesystem::is_directory(dir)) throw vlm::ConfigError(dir + ": not a folder");
  std::ifstream in(meta_path);
  if (!in) throw vlm::ConfigError(meta_path + ": cannot read it (not a model folder vlmlab kept?)");
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw vlm::ConfigError(meta_path + ": not valid JSON: " + e.what());
  }
  std::string name = meta.contains("task") ? meta["task"].value("name", "") : "";
  vlm::data::Params params =
      meta.contains("task") ? params_of_json(meta["task"].value("params", nlohmann::json::object()), meta_path)
                            : vlm::data::Params{};
  int64_t n = meta.contains("eval") ? meta["eval"].value("samples", int64_t{400}) : 400;
  int b = meta.contains("eval") ? meta["eval"].value("batch_size", 32) : 32;
  int t = meta.value("threads", 1);
  if (!task_name.empty()) {
    name = task_name;
    params.clear();
  }
  if (!experiment.empty()) {
    const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(experiment);
    name = exp.base.task;
    params = exp.base.task_params;
    n = exp.base.eval.samples;
    b = exp.base.eval.batch_size;
  }
  if (name.empty()) throw vlm::ConfigError(meta_path + ": names no task; pass --task or --experiment");
  if (samples > 0) n = samples;
  if (batch > 0) b = batch;
  if (threads > 0) t = threads;
  if (n < 1 || b < 1 || t < 1) throw po::error("--samples, --batch-size and --threads must be >= 1");
  vlm::set_num_threads(t);
  const auto task = vlm::data::make_task(name, params);
  vlm::Vlm model(dir, *task);
  const vlm::data::Split which = vlm::data::parse_split(split, "--split");
  const vlm::EvalResult r = vlm::evaluate(model, *task, which, n, b);
  if (!export_dir.empty()) export_fixture(model, *task, which, dir, export_dir);
  if (json) {
    nlohmann::json out = {{"model", dir}, {"task", name}, {"split", split}, {"samples", n}, {"batch_size", b},
                          {"threads", t}, {"scores", nlohmann::json::array()}};
    for (const vlm::SubtypeScore& sc : r.scores)
      out["scores"].push_back({{"subtype", sc.subtype}, {"n", sc.n}, {"correct", sc.correct},
                               {"accuracy", sc.accuracy}, {"majority", sc.majority}, {"chance", sc.chance}});
    out["headline"] = r.headline;
    out["metrics"] = nlohmann::json::array();
    for (const vlm::data::MetricScore& m : r.metrics)
      out["metrics"].push_back({{"subtype", m.subtype}, {"metric", m.metric}, {"n", m.n}, {"value", m.value},
                                {"baseline", m.baseline}, {"baseline_name", m.baseline_name}});
    std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  std::printf("%s on %s, %s split, %lld items (batch %d, %d thread(s))\n", dir.c_str(), name.c_str(), split.c_str(),
              static_cast<long long>(n), b, t);
  std::printf("  %-12s %6s %8s %9s %9s %8s\n", "subtype", "n", "correct", "accuracy", "majority", "chance");
  for (const vlm::SubtypeScore& sc : r.scores)
    std::printf("  %-12s %6lld %8lld %9.4f %9.4f %8.4f\n", sc.subtype.c_str(), static_cast<long long>(sc.n),
                static_cast<long long>(sc.correct), sc.accuracy, sc.majority, sc.chance);
  if (!r.metrics.empty()) {
    std::printf("  %-12s %-14s %9s %9s  (headline: %s)\n", "subtype", "metric", "value", "baseline", r.headline.c_str());
    for (const vlm::data::MetricScore& m : r.metrics)
      std::printf("  %-12s %-14s %9.4f %9.4f  %s\n", m.subtype.c_str(), m.metric.c_str(), m.value, m.baseline,
                  m.baseline_name.c_str());
  }
  return 0;
}

int cmd_list(const std::vector<std::string>& args) {
  po::options_description desc("vlmlab list\nFamilies (with the transformers class each reproduces), projectors and tasks");
  desc.add_options()("help,h", "show this help");
  po::variables_map vm;
  if (!parse_args(args, desc, vm)) return 0;
  std::puts("families:");
  for (const vlm::FamilyEntry& f : vlm::families())
    std::printf("  %-9s %s (config model_type \"%s\")\n", std::string(f.name).c_str(), std::string(f.hf_class).c_str(),
                std::string(f.hf_model_type).c_str());
  std::puts("projectors (llava's multi_modal_projector; set projector_hidden_act in a [[variant]]):");
  std::puts("  mlp2x_gelu  linear_1 -> projector_hidden_act (gelu) -> linear_2, as LlavaMultiModalProjector");
  std::puts("tasks:");
  for (const vlm::data::TaskInfo& t : vlm::data::task_infos()) {
    std::printf("  %-14s %s\n", t.name.c_str(), t.summary.c_str());
    for (const vlm::data::ParamSpec& p : t.params) {
      std::ostringstream def;
      std::visit([&](const auto& v) { def << v; }, p.default_value);
      std::printf("      %-16s default %-8s %s\n", p.key.c_str(), def.str().c_str(), p.help.c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version" || cmd == "-V") {
    std::printf("vlmlab %s (commit %s)\n", VLMLAB_VERSION, VLMLAB_GIT_COMMIT);
    return 0;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "demo") return cmd_demo(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "check") return cmd_check(args);
    if (cmd == "eval") return cmd_eval(args);
    if (cmd == "list") return cmd_list(args);
    if (cmd == "report") return cmd_report(args);
    if (cmd == "sample") return cmd_sample(args);
    if (cmd == "parity") return cmd_parity(args);
    if (cmd == "bench-model") return cmd_bench_model(args);
    std::fprintf(stderr, "vlmlab: unknown command \"%s\"%s\n", cmd.c_str(), vlm::did_you_mean(cmd, kCommands).c_str());
    usage();
    return 2;
  } catch (const po::error& e) {
    std::fprintf(stderr, "vlmlab %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const vlm::ConfigError& e) {  // under MPI every rank has the same one: the root says it
    if (vlm::dist::root()) std::fprintf(stderr, "vlmlab %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    if (vlm::dist::root()) std::fprintf(stderr, "vlmlab %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
