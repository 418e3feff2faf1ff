// Run under mpirun -np 8: the mesh pp2 x dp2 x tp2 with ep4 folded. Each axis communicator
// holds the ranks that share every other coordinate, in coordinate order.
#include <catch2/catch.hpp>

#include "parallel/mesh.h"

using namespace moe;

TEST_CASE("mesh: pp2 x dp2 x tp2 with ep4 folded splits the world by coordinates", "[mpi][mesh]") {
  MpiCommunicator world;
  REQUIRE(world.size() == 8);
  const Config cfg = parse_config("", "mesh", {"parallel.pp=2", "parallel.tp=2", "parallel.ep=4", "model.n_layers=2"});
  const Layout l = resolve_layout(cfg, world.size());
  CHECK(l.dp == 2);
  CHECK(l.edp() == 1);
  Mesh mesh(l, world);
  const Coords& c = mesh.coords();
  CHECK(world.rank() == (c.pp * 2 + c.dp) * 2 + c.tp);
  // Axis sizes and ranks.
  CHECK(mesh.tp().size() == 2);
  CHECK(mesh.dp().size() == 2);
  CHECK(mesh.pp().size() == 2);
  CHECK(mesh.ep().size() == 4);
  CHECK(mesh.edp().size() == 1);
  CHECK(mesh.tp().rank() == c.tp);
  CHECK(mesh.dp().rank() == c.dp);
  CHECK(mesh.pp().rank() == c.pp);
  CHECK(mesh.ep().rank() == c.ep);
  // Members of a group agree on the other coordinates: sum of a shared coordinate = size x it.
  auto sum = [](Communicator& comm, int v) { return static_cast<int>(comm.all_reduce_sum(static_cast<double>(v))); };
  CHECK(sum(mesh.tp(), c.pp * 10 + c.dp) == 2 * (c.pp * 10 + c.dp));
  CHECK(sum(mesh.dp(), c.pp * 10 + c.tp) == 2 * (c.pp * 10 + c.tp));
  CHECK(sum(mesh.pp(), c.dp * 10 + c.tp) == 2 * (c.dp * 10 + c.tp));
  CHECK(sum(mesh.ep(), c.pp) == 4 * c.pp);
  // The ep group of a pipeline stage is its whole dp x tp block: ep ranks 0..3 once each.
  CHECK(sum(mesh.ep(), c.ep) == 0 + 1 + 2 + 3);
}

TEST_CASE("mesh: on the sim device the data axes move sim tensors, pp and tp stay on the host", "[mpi][mesh]") {
  MpiCommunicator world;
  const Config cfg = parse_config("", "mesh", {"parallel.tp=2", "parallel.ep=2", "model.n_layers=2"});
  Mesh mesh(resolve_layout(cfg, world.size()), world, Device::sim);
  for (Communicator* c : {&mesh.dp(), &mesh.edp(), &mesh.ep()}) CHECK(c->device() == Device::sim);
  for (Communicator* c : {&mesh.pp(), &mesh.tp(), &mesh.world()}) CHECK(c->device() == Device::cpu);
  CHECK(mesh.ep().label() == "ep");
  // A device axis's traffic and time are the mesh's.
  mesh.reset_bytes();
  Tensor t = Tensor::zeros({64}, DType::f32, Device::sim);
  mesh.dp().all_reduce_sum(t);
  REQUIRE(mesh.dp().bytes_sent().count("all_reduce"));
  CHECK(mesh.bytes_sent().at("all_reduce") == mesh.dp().bytes_sent().at("all_reduce"));
  CHECK(mesh.comm_seconds() >= mesh.dp().seconds());
}
