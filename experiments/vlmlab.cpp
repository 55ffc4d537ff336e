// The vlmlab command line: `vlmlab <command> [options]`, each command with its own --help.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "architectures/parity.h"
#include "experiments/demo.h"
#include "lib/core/check.h"
#include "lib/io/hf_config.h"
#include "lib/io/safetensors.h"

namespace po = boost::program_options;

namespace {

void usage() {
  std::puts(
      "usage: vlmlab <command> [options]\n"
      "commands:\n"
      "  demo     train and evaluate a tiny decoder with the core (a smoke test of the whole stack)\n"
      "  parity   compare a family with Hugging Face transformers on a fixture folder\n"
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
    if (cmd == "parity") return cmd_parity(args);
    std::fprintf(stderr, "vlmlab: unknown command \"%s\"\n", cmd.c_str());
    usage();
    return 2;
  } catch (const po::error& e) {
    std::fprintf(stderr, "vlmlab %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlmlab %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
