// The processes of one job, for scale-out under MPI (README "Running on several cores and hosts").
//
// Two implementations behind this one header, picked by meson (-Dmpi=auto|enabled|disabled):
// dist_mpi.cpp (OpenMPI) and dist_local.cpp (one process, no MPI). Callers never #ifdef: without
// MPI, or in an MPI build started without a launcher (plain `vlmlab run`), the job is one process
// of rank 0 and every collective below is the identity. MPI stays out of lib/: only the runner and
// the CLI talk to this module, and training reaches it through TrainOptions' data-parallel hook.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vlm::dist {

// True when this binary was built with MPI (whether or not this process runs under a launcher).
bool built_with_mpi();

// Starts MPI for the lifetime of the object when the process was started by an MPI launcher
// (mpirun / mpiexec / srun: OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK in the environment), and
// finalizes it at the end. Without a launcher nothing starts and the job is this one process. One
// Session per process, created before any call below and kept until the end.
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

int rank();  // 0 ... size() - 1
int size();  // processes in the job
inline bool root() { return rank() == 0; }
const std::string& host();  // this process's host name

// Waits until every rank got here, sleeping between checks instead of spinning, so ranks that are
// done leave the cores to those still working (OpenMPI busy-polls in its blocking collectives).
void wait_for_all();

// Sums element-wise over the ranks, in rank order: element i becomes ((v0[i] + v1[i]) + v2[i]) + ...
// where vr is rank r's buffer, so the result does not depend on MPI's choice of algorithm, and
// every rank gets the same bits. The buffers must have the same length on every rank.
void sum_in_rank_order(std::span<double> values);

int64_t sum(int64_t v);  // over the ranks (exact)

std::string broadcast(const std::string& s);  // root's string, on every rank
// Every rank's string, in rank order, on the root (empty elsewhere).
std::vector<std::string> gather(const std::string& s);

// Ends every process of the job with `code` (MPI_Abort); in one process, std::exit. For an error
// that only some ranks hit, where the others would wait forever.
[[noreturn]] void abort_job(int code);

}  // namespace vlm::dist
