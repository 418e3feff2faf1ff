// The one line a failing job prints (README: one line per error, also under mpirun), written
// in one write(2) so that lines of several processes cannot splice. Open MPI's own banners
// (MPI_Abort's, a rank's non-zero exit) are silenced by orte_execute_quiet, which
// scripts/mpi-env.sh sets (or mpirun -q).
#pragma once
#include <string>

namespace moe {

// This process's rank in its mpirun job (PMIX_RANK, set before MPI starts); 0 on its own.
int job_rank();

// An error every process of the job meets alike (a config, a command line, a subcommand's
// input, all read the same by every rank): "moe: error: <what>" from the job's rank 0 alone
// (mpirun's PMIX_RANK; a process on its own is rank 0). The other ranks wait up to 2 s before
// returning: mpirun ends the job at the first non-zero exit, which must be rank 0's, after
// its line.
void print_error(const std::string& what);

// An error a rank may meet on its own, inside training: "moe: error on rank <rank>: <what>",
// from the first rank of the
// job (on this node) to claim it, through a Linux abstract socket named after the job (held
// until the process ends; nothing is left behind). Rank 0 claims at once, the others after
// 2 s: if rank 0 failed too, its MPI_Abort ends them first (mpirun takes a fraction of that),
// so an error every rank meets is printed once, by rank 0; ranks failing without it race for
// the claim. Returns whether this process printed it.
bool print_rank_error(int rank, const std::string& what);

}  // namespace moe
