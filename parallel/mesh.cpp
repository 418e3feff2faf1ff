#include "parallel/mesh.h"

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

Mesh::Mesh(const Layout& layout, MPI_Comm world) : layout_(layout) {
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  coords_ = coords_of(layout_, rank);
  const auto& c = coords_;
  // Ranks sharing `color` form one group, ordered by `key`.
  auto split = [&](int color, int key) {
    MPI_Comm comm;
    if (MPI_Comm_split(world, color, key, &comm) != MPI_SUCCESS)
      throw CommError(fmt::format("MPI_Comm_split failed on rank {}", rank));
    owned_.push_back(comm);
    return std::make_unique<MpiCommunicator>(comm);
  };
  tp_ = split(c.pp * layout_.dp + c.dp, c.tp);
  dp_ = split(c.pp * layout_.tp + c.tp, c.dp);
  pp_ = split(c.dp * layout_.tp + c.tp, c.pp);
  ep_ = split(c.pp * layout_.edp() + c.edp, c.ep);
  edp_ = split(c.pp * layout_.ep + c.ep, c.edp);
  tp_->set_label("tp"), dp_->set_label("dp"), pp_->set_label("pp"), ep_->set_label("ep"), edp_->set_label("edp");
}

std::map<std::string, std::uint64_t> Mesh::bytes_sent() const {
  std::map<std::string, std::uint64_t> sum;
  for (const auto* c : {pp_.get(), dp_.get(), tp_.get(), ep_.get(), edp_.get()})
    for (const auto& [kind, bytes] : c->bytes_sent()) sum[kind] += bytes;
  return sum;
}

double Mesh::comm_seconds() const {
  double t = 0;
  for (const auto* c : {pp_.get(), dp_.get(), tp_.get(), ep_.get(), edp_.get()}) t += c->seconds();
  return t;
}

void Mesh::reset_bytes() {
  for (auto* c : {pp_.get(), dp_.get(), tp_.get(), ep_.get(), edp_.get()}) c->reset_bytes();
}

Mesh::~Mesh() {
  for (MPI_Comm& c : owned_) MPI_Comm_free(&c);
}

}  // namespace moe
