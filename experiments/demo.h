#pragma once

#include <string>

namespace vlm {

struct DemoOptions {
  int threads = 2;
  int steps = 400;
  int batch = 32;
  int layers = 2;
  long long hidden = 64;
  unsigned long long seed = 0;
  std::string out_dir = "results/demo";
};

int run_demo(const DemoOptions& opt);

}  // namespace vlm
