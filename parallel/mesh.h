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

#include "comm/expert_group.h"
#include "parallel/mpi_communicator.h"
#include "config/config.h"

namespace moe {

struct Layout {
  int pp = 1, dp = 1, tp = 1, ep = 1;
  int ranks_per_node = 0;     // consecutive world ranks sharing a node (0: all of them)
  bool hierarchical = true;   // expert dispatch over nodes (parallel.dispatch)
  bool overlap = true;        // parallel.overlap
  int redundant = 0;          // parallel.redundant_experts
  bool node_reduced = false;  // parallel.node_reduced_combine
  int world() const { return pp * dp * tp; }
  int edp() const { return dp * tp / ep; }
  // Nodes one ep group spans (its ranks are consecutive, so they fill whole nodes or share one).
  int ep_nodes() const { return ranks_per_node > 0 && ep > ranks_per_node ? ep / ranks_per_node : 1; }
  int ep_per_node() const { return ep / ep_nodes(); }
};

// parallel.dp = 0 resolved to world / (tp * pp), parallel.ranks_per_node = 0 to
// launched_per_node (the launcher's, 0: one node); the layout checked against the model and
// the number of ranks. ConfigError naming the keys and the numbers on any mismatch.
Layout resolve_layout(const Config& cfg, int world_size, int launched_per_node = 0);

struct Coords {
  int pp = 0, dp = 0, tp = 0, ep = 0, edp = 0;
};
Coords coords_of(const Layout& l, int rank);

// One communicator per axis, split from `world` (MPI_Comm_split, freed on destruction),
// handed out as the abstract Communicator. The data axes (dp, edp, ep: gradient reductions,
// expert dispatch and combine) move `device`'s tensors on that device's backend: NCCL over
// the MPI axis (its bootstrap and host twin) for cuda in a build with NCCL (without, the MPI
// axis stages GPU tensors through the host), MPI reading the sim device's memory
// for sim (as NCCL reads a GPU's), the MPI axis itself for cpu. pp and tp stay on MPI: the
// pipeline's hand-overs are staged through the host and tensor parallelism's loss is host
// code. A cuda mesh first binds this process to the GPU of its rank on the node.
class Mesh {
 public:
  Mesh(const Layout& layout, MpiCommunicator& world, Device device = Device::cpu);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;
  const Layout& layout() const { return layout_; }
  const Coords& coords() const { return coords_; }
  Communicator& world() { return world_; }  // host tensors (checkpoints, agreement)
  Communicator& pp() { return *pp_; }
  // The first and the last pipeline stage at this rank's dp and tp coordinates (the stages
  // holding the embedding when MTP copies it to the last); a stage between them alone.
  Communicator& embedding() { return data(embedding_, dev_embedding_); }
  Communicator& tp() { return *tp_; }
  Communicator& dp() { return data(dp_, dev_dp_); }
  Communicator& edp() { return data(edp_, dev_edp_); }
  Communicator& ep() { return data(ep_, dev_ep_); }
  // ep with, where it spans nodes and dispatch is hierarchical, its splits by node.
  ExpertGroup expert_group();
  // The expert group's communicators (host and device, ep and its node splits): a slow link
  // (Communicator::set_link_delay), the seconds inside their operations, and the seconds
  // this rank computed while their exchanges travelled.
  void set_expert_link_delay(double seconds);
  double expert_seconds() const;
  double expert_overlap_seconds() const;
  // Bytes this rank sent over the axes (not world), per kind; and a fresh count.
  std::map<std::string, std::uint64_t> bytes_sent() const;
  void reset_bytes();
  double comm_seconds() const;  // inside operations on any axis and on world

 private:
  static Communicator& data(const std::unique_ptr<MpiCommunicator>& host, const std::unique_ptr<Communicator>& dev) {
    return dev ? *dev : *host;
  }
  std::vector<Communicator*> all() const;  // every axis, host and device
  std::vector<Communicator*> expert_axes() const;
  Layout layout_;
  Coords coords_;
  MpiCommunicator& world_;
  std::vector<MPI_Comm> owned_;
  std::unique_ptr<MpiCommunicator> pp_, dp_, tp_, ep_, edp_, embedding_, ep_node_, ep_rail_;
  std::unique_ptr<Communicator> dev_dp_, dev_edp_, dev_ep_, dev_embedding_, dev_ep_node_,
      dev_ep_rail_;  // null on the cpu
};

}  // namespace moe
