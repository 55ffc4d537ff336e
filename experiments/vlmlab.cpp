// The vlmlab command line: `vlmlab <command> [options]`, each command with its own --help.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <variant>
#include <string>
#include <vector>

#include "architectures/parity.h"
#include "experiments/config.h"
#include "experiments/demo.h"
#include "experiments/runner.h"
#include "lib/core/parallel.h"
#include "lib/data/task.h"
#include "lib/core/check.h"
#include "lib/io/hf_config.h"
#include "lib/io/safetensors.h"

namespace po = boost::program_options;

namespace {

void usage() {
  std::puts(
      "usage: vlmlab <command> [options]\n"
      "commands:\n"
      "  run      run an experiment (TOML): train, evaluate and measure every run into HDF5\n"
      "  check    validate an experiment and list the runs it would make, without training\n"
      "  list     families, projectors and tasks (with their parameters)\n"
      "  parity   compare a family with Hugging Face transformers on a fixture folder\n"
      "  demo     train and evaluate a tiny decoder with the core (a smoke test of the whole stack)\n"
      "Run `vlmlab <command> --help` for a command's options.");
}

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
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  po::notify(vm);
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
                                                 "max |diff| allowed on float stages");
  po::options_description hidden;
  hidden.add_options()("dir", po::value<std::string>(&dir));
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("dir", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  po::notify(vm);
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
                     po::variables_map& vm) {
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>(&file));
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("file", 1);
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return false;
  }
  po::notify(vm);
  if (file.empty()) throw po::error("missing the experiment file (see --help)");
  return true;
}

int cmd_run(const std::vector<std::string>& args) {
  vlm::exp::RunOptions o;
  std::string file;
  po::options_description desc(
      "vlmlab run EXP.toml [options]\n"
      "Trains, evaluates and measures every run of the experiment; each completed run is written\n"
      "durably to the results file before the next starts. Exit 0 when every run completed, 1 when\n"
      "some failed (recorded with their errors), 2 for an invalid config");
  desc.add_options()("help,h", "show this help")(
      "out", po::value<std::string>(&o.out), "results file (default results/<experiment name>.h5)")(
      "threads", po::value<int>(&o.threads)->default_value(0), "threads (default: the experiment's)")(
      "only", po::value<std::string>(&o.only), "only runs whose id contains PATTERN (* matches anything)")(
      "resume", po::bool_switch(&o.resume), "keep the completed runs of an existing results file, do the rest")(
      "overwrite", po::bool_switch(&o.overwrite), "replace an existing results file")(
      "quiet", po::bool_switch(&o.quiet), "no progress output");
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm)) return 0;
  if (o.threads < 0) throw po::error("--threads must be >= 1");
  if (o.resume && o.overwrite) throw po::error("--resume and --overwrite exclude each other");
  const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(file);
  return vlm::exp::run_experiment(exp, o);
}

int cmd_check(const std::vector<std::string>& args) {
  std::string file;
  po::options_description desc(
      "vlmlab check EXP.toml\n"
      "Validates the experiment (exit 2 with file:line:col on an error) and prints the runs it would\n"
      "make with their parameter counts and visual tokens per image, without training");
  desc.add_options()("help,h", "show this help");
  po::variables_map vm;
  if (!parse_with_file(args, desc, file, vm)) return 0;
  const vlm::exp::LoadedExperiment exp = vlm::exp::load_experiment(file);
  std::printf("%s: experiment \"%s\", task %s, %zu run(s)\n", file.c_str(), exp.base.name.c_str(),
              exp.base.task.c_str(), exp.runs.size());
  std::printf("  %-40s %-9s %10s %10s %10s %10s %8s\n", "run", "family", "vision", "connector", "lm", "total",
              "vis.tok");
  for (const vlm::exp::RunSpec& r : exp.runs) {
    const auto task = vlm::data::make_task(r.config.task, r.config.task_params);
    vlm::Vlm v(r.vlm_spec(), *task);
    const vlm::ParamCounts c = v.param_counts();
    const auto [h, w] = task->max_image_size();
    std::printf("  %-40s %-9s %10lld %10lld %10lld %10lld %8lld\n", r.run_id.c_str(), r.variant.family.c_str(),
                static_cast<long long>(c.vision), static_cast<long long>(c.connector), static_cast<long long>(c.lm),
                static_cast<long long>(c.total()), static_cast<long long>(v.processor().image_cost(h, w).visual_tokens));
  }
  return 0;
}

int cmd_list(const std::vector<std::string>& args) {
  po::options_description desc("vlmlab list\nFamilies (with the transformers class each reproduces), projectors and tasks");
  desc.add_options()("help,h", "show this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
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
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "demo") return cmd_demo(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "check") return cmd_check(args);
    if (cmd == "list") return cmd_list(args);
    if (cmd == "parity") return cmd_parity(args);
    std::fprintf(stderr, "vlmlab: unknown command \"%s\"\n", cmd.c_str());
    usage();
    return 2;
  } catch (const po::error& e) {
    std::fprintf(stderr, "vlmlab %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const vlm::ConfigError& e) {
    std::fprintf(stderr, "vlmlab %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmlab %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
