// host(): the same for the MPI and the one-process builds.
#include <unistd.h>

#include "experiments/dist.h"

namespace vlm::dist {

const std::string& host() {
  static const std::string name = [] {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return std::string("unknown");
    return std::string(buf);
  }();
  return name;
}

}  // namespace vlm::dist
