// The communicators of an expert-parallel group (model/dispatch.h): the group itself and, for
// the hierarchical dispatch where it spans several nodes, its split by node and by place.
#pragma once
#include "comm/communicator.h"

namespace moe {

// The expert-parallel group and, where it spans several nodes and dispatch is hierarchical,
// its two splits. Made from the ep communicator alone, it is one node (flat).
struct ExpertGroup {
  ExpertGroup(Communicator* ep = nullptr) : ep(ep) {}  // NOLINT: implicit, a flat group
  Communicator* ep = nullptr;
  Communicator* node = nullptr;  // the ep ranks on this rank's node, in ep order
  Communicator* rail = nullptr;  // the ep rank at this one's place on each node, in node order
  int ranks_per_node = 0;        // consecutive ep ranks sharing a node (0: all of them)
  bool overlap = true;           // the first hop's payload travels while the shared experts compute
  int redundant = 0;             // replica slots per rank (model/replicas.h)
  bool node_reduced = false;     // hierarchical, BF16 wire: the way back summed in the node (model/dispatch.h)
  bool hierarchical() const { return node && rail && rail->size() > 1; }
};

}  // namespace moe
