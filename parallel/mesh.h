// The process mesh: world = pp x dp x tp, with expert parallelism folded inside dp x tp
// ("parallel folding": the expert layout may differ from the attention layout).
//   rank = (pp_i * dp + dp_i) * tp + tp_i        (tp fastest: tp groups are neighbours)
//   inside one dp x tp block b = dp_i * tp + tp_i:  ep_i = b % ep,  edp_i = b / ep
// so an expert-parallel group is ep consecutive ranks, and each of the dp*tp/ep groups
// holds a full copy of the experts (edp: the experts' data-parallel axis).
#pragma once
#include <mpi.h>

#include <map>
#include <memory>
#include <string>

#include "parallel/mpi_communicator.h"
#include "config/config.h"

namespace moe {

struct Layout {
  int pp = 1, dp = 1, tp = 1, ep = 1;
  int world() const { return pp * dp * tp; }
  int edp() const { return dp * tp / ep; }
};

// parallel.dp = 0 resolved to world / (tp * pp); the layout checked against the model and
// the number of ranks. ConfigError naming the keys and the numbers on any mismatch.
Layout resolve_layout(const Config& cfg, int world_size);

struct Coords {
  int pp = 0, dp = 0, tp = 0, ep = 0, edp = 0;
};
Coords coords_of(const Layout& l, int rank);

// One communicator per axis, split from `world` (MPI_Comm_split, freed on destruction).
class Mesh {
 public:
  Mesh(const Layout& layout, MPI_Comm world);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;
  const Layout& layout() const { return layout_; }
  const Coords& coords() const { return coords_; }
  MpiCommunicator& pp() { return *pp_; }
  MpiCommunicator& dp() { return *dp_; }
  MpiCommunicator& tp() { return *tp_; }
  MpiCommunicator& ep() { return *ep_; }
  MpiCommunicator& edp() { return *edp_; }
  // Bytes this rank sent over all axes, per kind; and a fresh count.
  std::map<std::string, std::uint64_t> bytes_sent() const;
  void reset_bytes();
  double comm_seconds() const;  // inside operations on any axis

 private:
  Layout layout_;
  Coords coords_;
  std::vector<MPI_Comm> owned_;
  std::unique_ptr<MpiCommunicator> pp_, dp_, tp_, ep_, edp_;
};

}  // namespace moe
