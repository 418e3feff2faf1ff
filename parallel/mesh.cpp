#include "parallel/mesh.h"

#ifdef MOE_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

#include "kernels/device.h"

namespace moe {

Layout resolve_layout(const Config& cfg, int world_size) {
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
  if (device == Device::cuda) use_cuda_device(world.node_rank());
  dev_dp_ = data_axis(*dp_, device), dev_edp_ = data_axis(*edp_, device), dev_ep_ = data_axis(*ep_, device);
  dev_embedding_ = data_axis(*embedding_, device);
}

std::vector<Communicator*> Mesh::all() const {
  std::vector<Communicator*> out{pp_.get(), dp_.get(), tp_.get(), ep_.get(), edp_.get(), embedding_.get()};
  for (auto* c : {dev_dp_.get(), dev_edp_.get(), dev_ep_.get(), dev_embedding_.get()})
    if (c) out.push_back(c);
  return out;
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
  dev_dp_.reset(), dev_edp_.reset(), dev_ep_.reset(),
      dev_embedding_.reset();  // before the MPI axes they bootstrap from
  for (MPI_Comm& c : owned_) MPI_Comm_free(&c);
}

}  // namespace moe
