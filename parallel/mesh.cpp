#include "parallel/mesh.h"

#ifdef MOE_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

#include "kernels/device.h"

namespace moe {

namespace {
void resolve_nodes(Layout& l, const Config& cfg, int launched_per_node) {
  const std::string& f = cfg.source;
  const int configured = static_cast<int>(cfg.parallel.ranks_per_node);
  l.ranks_per_node = configured > 0 ? configured : launched_per_node;
  l.hierarchical = cfg.parallel.dispatch == DispatchKind::hierarchical;
  l.overlap = cfg.parallel.overlap;
  l.redundant = static_cast<int>(cfg.parallel.redundant_experts);
  l.node_reduced = cfg.parallel.node_reduced_combine;
  const int r = l.ranks_per_node;
  if (r <= 0) return;
  MOE_CHECK(l.world() % r == 0, ConfigError,
            "{}: parallel.ranks_per_node = {} does not divide the {} ranks; launch whole nodes", f, r, l.world());
  if (l.ep % r == 0 || r % l.ep == 0) return;
  // Groups straddling nodes: as launched, they are dispatched flat (nodes unknown); asked for
  // by the config, it is a mistake.
  MOE_CHECK(configured == 0, ConfigError,
            "{}: parallel.ep = {} and parallel.ranks_per_node = {}: an expert-parallel group must fill whole nodes or "
            "share one; make one a multiple of the other",
            f, l.ep, r);
  l.ranks_per_node = 0;
}
}  // namespace

Layout resolve_layout(const Config& cfg, int world_size, int launched_per_node) {
  const auto& p = cfg.parallel;
  const auto& m = cfg.model;
  const std::string& f = cfg.source;
  Layout l{static_cast<int>(p.pp), static_cast<int>(p.dp), static_cast<int>(p.tp), static_cast<int>(p.ep)};
  if (p.dp == 0) {
    MOE_CHECK(world_size % (l.tp * l.pp) == 0, ConfigError,
              "{}: parallel: {} ranks cannot be split into tp = {} x pp = {} groups; launch a multiple of {} ranks", f,
              world_size, l.tp, l.pp, l.tp * l.pp);
    l.dp = world_size / (l.tp * l.pp);
  }
  MOE_CHECK(l.world() == world_size, ConfigError,
            "{}: parallel: pp x dp x tp = {} x {} x {} = {} ranks, but mpirun started {}; launch mpirun -np {} or "
            "change the layout",
            f, l.pp, l.dp, l.tp, l.world(), world_size, l.world());
  MOE_CHECK((l.dp * l.tp) % l.ep == 0, ConfigError,
            "{}: parallel.ep = {} must divide dp x tp = {} x {} = {} (experts are folded inside the data and tensor "
            "parallel ranks)",
            f, l.ep, l.dp, l.tp, l.dp * l.tp);
  if (l.tp > 1)
    MOE_CHECK(m.vocab_size % l.tp == 0, ConfigError,
              "{}: parallel.tp = {} must divide model.vocab_size = {} (vocabulary-parallel embedding and loss)", f,
              l.tp, m.vocab_size);
  // ep vs experts, heads vs tp and pp vs layers are checked with the config itself
  // (config/config.cpp), which needs no world size.
  resolve_nodes(l, cfg, launched_per_node);
  return l;
}

Coords coords_of(const Layout& l, int rank) {
  Coords c;
  c.tp = rank % l.tp;
  c.dp = (rank / l.tp) % l.dp;
  c.pp = rank / (l.tp * l.dp);
  const int b = c.dp * l.tp + c.tp;
  c.ep = b % l.ep;
  c.edp = b / l.ep;
  return c;
}

namespace {
// The backend moving `device`'s tensors over the ranks of host axis `axis` (null: the axis itself).
std::unique_ptr<Communicator> data_axis(MpiCommunicator& axis, Device device) {
  std::unique_ptr<Communicator> c;
  if (device == Device::sim) c = std::make_unique<MpiCommunicator>(axis.comm(), Device::sim);
#ifdef MOE_WITH_NCCL
  if (device == Device::cuda) c = std::make_unique<NcclCommunicator>(axis);
#endif
  if (c) c->set_label(axis.label());
  return c;
}
}  // namespace

Mesh::Mesh(const Layout& layout, MpiCommunicator& world, Device device) : layout_(layout), world_(world) {
  const MPI_Comm w = world.comm();
  const int rank = world.rank();
  coords_ = coords_of(layout_, rank);
  const auto& c = coords_;
  // Ranks sharing `color` form one group, ordered by `key`.
  auto split = [&](int color, int key, const char* label) {
    MPI_Comm comm;
    if (MPI_Comm_split(w, color, key, &comm) != MPI_SUCCESS)
      throw CommError(fmt::format("MPI_Comm_split failed on rank {}", rank));
    owned_.push_back(comm);
    auto axis = std::make_unique<MpiCommunicator>(comm);
    axis->set_label(label);
    return axis;
  };
  tp_ = split(c.pp * layout_.dp + c.dp, c.tp, "tp");
  dp_ = split(c.pp * layout_.tp + c.tp, c.dp, "dp");
  pp_ = split(c.dp * layout_.tp + c.tp, c.pp, "pp");
  ep_ = split(c.pp * layout_.edp() + c.edp, c.ep, "ep");
  edp_ = split(c.pp * layout_.ep + c.ep, c.edp, "edp");
  const bool end_stage = c.pp == 0 || c.pp == layout_.pp - 1;
  embedding_ = split(end_stage ? c.dp * layout_.tp + c.tp : layout_.dp * layout_.tp + rank, c.pp, "embedding");
  if (layout_.hierarchical && layout_.ep_nodes() > 1) {
    // ep rank = node * per_node + place (the group's ranks are consecutive world ranks).
    const int per_node = layout_.ep_per_node(), group = c.pp * layout_.edp() + c.edp;
    ep_node_ = split(group * layout_.ep_nodes() + c.ep / per_node, c.ep % per_node, "ep_node");
    ep_rail_ = split(group * per_node + c.ep % per_node, c.ep / per_node, "ep_rail");
  }
  if (device == Device::cuda) use_cuda_device(world.node_rank());
  dev_dp_ = data_axis(*dp_, device), dev_edp_ = data_axis(*edp_, device), dev_ep_ = data_axis(*ep_, device);
  dev_embedding_ = data_axis(*embedding_, device);
  if (ep_node_) dev_ep_node_ = data_axis(*ep_node_, device), dev_ep_rail_ = data_axis(*ep_rail_, device);
}

ExpertGroup Mesh::expert_group() {
  ExpertGroup g(layout_.ep > 1 ? &ep() : nullptr);
  g.ranks_per_node = layout_.ep_per_node();
  g.overlap = layout_.overlap;
  g.redundant = layout_.redundant;
  g.node_reduced = layout_.node_reduced;
  if (ep_node_) g.node = &data(ep_node_, dev_ep_node_), g.rail = &data(ep_rail_, dev_ep_rail_);
  return g;
}

std::vector<Communicator*> Mesh::all() const {
  std::vector<Communicator*> out{pp_.get(), dp_.get(), tp_.get(), ep_.get(), edp_.get(), embedding_.get()};
  for (Communicator* c :
       {static_cast<Communicator*>(ep_node_.get()), static_cast<Communicator*>(ep_rail_.get()), dev_dp_.get(),
        dev_edp_.get(), dev_ep_.get(), dev_embedding_.get(), dev_ep_node_.get(), dev_ep_rail_.get()})
    if (c) out.push_back(c);
  return out;
}

std::vector<Communicator*> Mesh::expert_axes() const {
  std::vector<Communicator*> out;
  for (Communicator* c :
       {static_cast<Communicator*>(ep_.get()), static_cast<Communicator*>(ep_node_.get()),
        static_cast<Communicator*>(ep_rail_.get()), dev_ep_.get(), dev_ep_node_.get(), dev_ep_rail_.get()})
    if (c) out.push_back(c);
  return out;
}

void Mesh::set_expert_link_delay(double seconds) {
  for (Communicator* c : expert_axes()) c->set_link_delay(seconds);
}

double Mesh::expert_seconds() const {
  double t = 0;
  for (const Communicator* c : expert_axes()) t += c->seconds();
  return t;
}

double Mesh::expert_overlap_seconds() const {
  double t = 0;
  for (const Communicator* c : expert_axes()) t += c->overlapped_seconds();
  return t;
}

std::map<std::string, std::uint64_t> Mesh::bytes_sent() const {
  std::map<std::string, std::uint64_t> sum;
  for (const auto* c : all())
    for (const auto& [kind, bytes] : c->bytes_sent()) sum[kind] += bytes;
  return sum;
}

double Mesh::comm_seconds() const {
  double t = world_.seconds();
  for (const auto* c : all()) t += c->seconds();
  return t;
}

void Mesh::reset_bytes() {
  for (auto* c : all()) c->reset_bytes();
}

Mesh::~Mesh() {
  dev_dp_.reset(), dev_edp_.reset(), dev_ep_.reset(), dev_embedding_.reset(), dev_ep_node_.reset(),
      dev_ep_rail_.reset();  // before the MPI axes they bootstrap from
  for (MPI_Comm& c : owned_) MPI_Comm_free(&c);
}

}  // namespace moe
