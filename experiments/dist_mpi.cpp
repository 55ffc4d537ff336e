// experiments/dist.h over MPI (OpenMPI). Only the calling thread ever enters MPI (MPI_THREAD_FUNNELED):
// the core's OpenMP threads never do.
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "experiments/dist.h"
#include "lib/core/check.h"

namespace vlm::dist {

namespace {

bool g_active = false;  // MPI is initialized for this process
int g_rank = 0, g_size = 1;

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  VLM_CHECK(false, "MPI: " << what << ": " << std::string(msg, static_cast<std::size_t>(len)));
}

int as_count(std::size_t n, const char* what) {
  VLM_CHECK(n <= static_cast<std::size_t>(INT_MAX), "MPI: " << what << ": " << n << " elements is more than one message holds");
  return static_cast<int>(n);
}

}  // namespace

bool built_with_mpi() { return true; }

Session::Session() {
  if (g_active || !launched_by_mpi()) return;
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  g_active = true;
  // Errors come back as codes (and become vlm::Errors) instead of killing the job from inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank), "MPI_Comm_rank");
  check(MPI_Comm_size(MPI_COMM_WORLD, &g_size), "MPI_Comm_size");
}

Session::~Session() {
  if (!g_active) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_active = false;
}

int rank() { return g_rank; }
int size() { return g_size; }

void wait_for_all() {
  if (g_size == 1) return;
  MPI_Request req = MPI_REQUEST_NULL;
  check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
  for (;;) {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void sum_in_rank_order(std::span<double> values) {
  if (g_size == 1) return;
  const std::size_t n = values.size(), N = static_cast<std::size_t>(g_size), me = static_cast<std::size_t>(g_rank);
  as_count(n, "sum_in_rank_order");
  // Rank j owns elements [start(j), start(j + 1)): every rank sends it that slice (all-to-all), it
  // adds the N slices in rank order, and everyone gathers the owners' sums (a reduce-scatter and an
  // all-gather, like a ring all-reduce, with the order of every addition fixed).
  const auto start = [&](std::size_t j) { return n * j / N; };
  std::vector<int> send_counts(N), send_displs(N), recv_counts(N), recv_displs(N);
  const std::size_t mine = start(me + 1) - start(me);
  for (std::size_t j = 0; j < N; ++j) {
    send_counts[j] = static_cast<int>(start(j + 1) - start(j));
    send_displs[j] = static_cast<int>(start(j));
    recv_counts[j] = static_cast<int>(mine);
    recv_displs[j] = static_cast<int>(j * mine);
  }
  std::vector<double> slices(N * mine);
  check(MPI_Alltoallv(values.data(), send_counts.data(), send_displs.data(), MPI_DOUBLE, slices.data(),
                      recv_counts.data(), recv_displs.data(), MPI_DOUBLE, MPI_COMM_WORLD),
        "MPI_Alltoallv");
  double* out = values.data() + start(me);
  for (std::size_t k = 0; k < mine; ++k) {
    double s = slices[k];
    for (std::size_t r = 1; r < N; ++r) s += slices[r * mine + k];
    out[k] = s;
  }
  check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values.data(), send_counts.data(), send_displs.data(),
                       MPI_DOUBLE, MPI_COMM_WORLD),
        "MPI_Allgatherv");
}

int64_t sum(int64_t v) {
  if (g_size == 1) return v;
  int64_t out = 0;
  check(MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  return out;
}

std::string broadcast(const std::string& s) {
  if (g_size == 1) return s;
  int len = g_rank == 0 ? as_count(s.size(), "broadcast") : 0;
  check(MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  std::string out = g_rank == 0 ? s : std::string(static_cast<std::size_t>(len), '\0');
  if (len > 0) check(MPI_Bcast(out.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return out;
}

std::vector<std::string> gather(const std::string& s) {
  if (g_size == 1) return {s};
  const int len = as_count(s.size(), "gather");
  std::vector<int> lens(g_rank == 0 ? static_cast<std::size_t>(g_size) : 0), displs(lens.size());
  check(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
  std::size_t total = 0;
  for (std::size_t r = 0; r < lens.size(); ++r) {
    displs[r] = as_count(total, "gather");
    total += static_cast<std::size_t>(lens[r]);
  }
  std::string all(total, '\0');
  check(MPI_Gatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD),
        "MPI_Gatherv");
  std::vector<std::string> out;
  for (std::size_t r = 0; r < lens.size(); ++r)
    out.push_back(all.substr(static_cast<std::size_t>(displs[r]), static_cast<std::size_t>(lens[r])));
  return out;
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace vlm::dist
