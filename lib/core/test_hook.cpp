#include "lib/core/test_hook.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace vlm {

namespace {
const char* wanted_point() {
  static const char* const wanted = std::getenv("VLMLAB_TEST_PAUSE");
  return wanted;
}
}  // namespace

bool test_pauses_enabled() { return wanted_point() != nullptr; }

void test_pause_point(const std::string& point) {
  const char* wanted = wanted_point();
  if (wanted == nullptr || point != wanted) return;
  if (const char* file = std::getenv("VLMLAB_TEST_PAUSE_FILE")) {
    const std::string path(file), tmp = path + ".writing";
    {
      std::ofstream out(tmp);
      out << point << "\n";
    }
    std::rename(tmp.c_str(), path.c_str());
  }
  std::fprintf(stderr, "vlmlab: paused at test point %s (VLMLAB_TEST_PAUSE); waiting to be killed\n", point.c_str());
  for (;;) pause();
}

}  // namespace vlm
