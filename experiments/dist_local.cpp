// experiments/dist.h without MPI (-Dmpi=disabled, or OpenMPI not installed): one process of rank 0,
// and every collective is the identity.

#include <cstdio>
#include <cstdlib>
#include <string>

#include "experiments/dist.h"
#include "lib/core/check.h"

namespace vlm::dist {

bool built_with_mpi() { return false; }

// Started by mpirun -n N > 1 anyway: N copies would each run the whole experiment into one file.
Session::Session() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* n = std::getenv(v);
    if (n != nullptr && std::atoi(n) > 1)
      throw ConfigError(std::string("started as one of ") + n + " MPI ranks (" + v +
                        "), but this vlmlab was built without MPI: rebuild with `meson setup -Dmpi=enabled` "
                        "(needs libopenmpi-dev), or run it without mpirun");
  }
}
Session::~Session() = default;

int rank() { return 0; }
int size() { return 1; }

void wait_for_all() {}
void sum_in_rank_order(std::span<double> /*values*/) {}
int64_t sum(int64_t v) { return v; }
std::string broadcast(const std::string& s) { return s; }
std::vector<std::string> gather(const std::string& s) { return {s}; }

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::exit(code);
}

}  // namespace vlm::dist
