// The vlmlab command line: `vlmlab <command> [options]`, each command with its own --help.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "experiments/demo.h"
#include "lib/core/check.h"

namespace po = boost::program_options;

namespace {

void usage() {
  std::puts(
      "usage: vlmlab <command> [options]\n"
      "commands:\n"
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
