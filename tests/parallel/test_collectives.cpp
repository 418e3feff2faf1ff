// Run under mpirun: every Communicator operation against the result computed locally from
// what each rank is known to hold, and its byte counter against the algorithm's formula.
#include <catch2/catch.hpp>

#include "comm/host_values.h"
#include "parallel/mpi_communicator.h"
#include "parallel/param_group.h"

#include <cmath>

using namespace moe;

namespace {
// A value that names its origin: rank r, element i.
float f(int r, std::int64_t i) { return static_cast<float>(1000 * r + i); }
Tensor filled(Shape s, int r) {
  Tensor t = Tensor::empty(std::move(s), DType::f32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = f(r, i);
  return t;
}
}  // namespace

TEST_CASE("collectives: all-reduce, reduce-scatter, all-gather, broadcast, send/recv", "[mpi][comm]") {
  MpiCommunicator c;
  const int p = c.size(), r = c.rank();
  const std::int64_t n = 5;

  Tensor a = filled({p * n}, r);
  c.all_reduce_sum(a);
  for (std::int64_t i = 0; i < p * n; ++i) {
    float want = 0;
    for (int q = 0; q < p; ++q) want += f(q, i);
    CHECK(a.data<float>()[i] == want);
  }

  Tensor rs = Tensor::empty({n}, DType::f32);
  c.reduce_scatter_sum(rs, filled({p * n}, r));
  for (std::int64_t i = 0; i < n; ++i) {
    float want = 0;
    for (int q = 0; q < p; ++q) want += f(q, r * n + i);
    CHECK(rs.data<float>()[i] == want);
  }

  Tensor ag = Tensor::empty({p, n}, DType::f32);
  c.all_gather(ag, filled({n}, r));
  for (int q = 0; q < p; ++q)
    for (std::int64_t i = 0; i < n; ++i) CHECK(ag.data<float>()[q * n + i] == f(q, i));

  const int root = p - 1;
  Tensor b = filled({n}, r);
  c.broadcast(b, root);
  for (std::int64_t i = 0; i < n; ++i) CHECK(b.data<float>()[i] == f(root, i));

  // Ring: even ranks send first, so blocking send/recv cannot deadlock.
  Tensor mine = filled({n}, r), got = Tensor::empty({n}, DType::f32);
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  if (r % 2 == 0) c.send(mine, next, 7), c.recv(got, prev, 7);
  else c.recv(got, prev, 7), c.send(mine, next, 7);
  for (std::int64_t i = 0; i < n; ++i) CHECK(got.data<float>()[i] == f(prev, i));

  const auto& bytes = c.bytes_sent();
  const std::uint64_t B = 4 * n;  // bytes of n floats
  CHECK(bytes.at("all_reduce") == 2 * (p - 1) * (p * B) / p);
  CHECK(bytes.at("reduce_scatter") == static_cast<std::uint64_t>(p - 1) * B);
  CHECK(bytes.at("all_gather") == static_cast<std::uint64_t>(p - 1) * B);
  CHECK(bytes.at("send") == B);
  CHECK(bytes.count("broadcast") == (r == root ? 1u : 0u));
}

TEST_CASE("collectives: all-to-all-v moves each row to its rank and counts exact bytes", "[mpi][comm]") {
  MpiCommunicator c;
  const int p = c.size(), r = c.rank();
  const std::int64_t C = 3;                                                                       // row width
  auto rows = [](int from, int to) { return std::int64_t((from + 2 * to) % 3 + (from == to)); };  // some zero
  std::vector<std::int64_t> send(static_cast<std::size_t>(p)), recv(static_cast<std::size_t>(p));
  std::int64_t ns = 0, nr = 0;
  for (int j = 0; j < p; ++j) ns += send[std::size_t(j)] = rows(r, j), nr += recv[std::size_t(j)] = rows(j, r);
  // Row k to rank j holds (r, j, k) so the receiver can check where it came from.
  Tensor in = Tensor::empty({ns, C}, DType::f32), out = Tensor::empty({nr, C}, DType::f32);
  std::int64_t at = 0;
  for (int j = 0; j < p; ++j)
    for (std::int64_t k = 0; k < rows(r, j); ++k, ++at)
      in.data<float>()[at * C] = float(r), in.data<float>()[at * C + 1] = float(j),
                            in.data<float>()[at * C + 2] = float(k);
  c.all_to_all_v(out, recv, in, send);
  at = 0;
  for (int j = 0; j < p; ++j)
    for (std::int64_t k = 0; k < rows(j, r); ++k, ++at) {
      CHECK(out.data<float>()[at * C] == float(j));
      CHECK(out.data<float>()[at * C + 1] == float(r));
      CHECK(out.data<float>()[at * C + 2] == float(k));
    }
  std::uint64_t want = 0;
  for (int j = 0; j < p; ++j)
    if (j != r) want += static_cast<std::uint64_t>(rows(r, j) * C) * 4;
  CHECK(c.bytes_sent().at("all_to_all") == want);
  // Mismatched counts are refused before any traffic.
  send[0] += 1;
  CHECK_THROWS_AS(c.all_to_all_v(out, recv, in, send), CommError);
}

TEST_CASE("param group: weights and gradients become views of one buffer, summed bucket by bucket", "[mpi][comm]") {
  MpiCommunicator c;
  const int p = c.size(), r = c.rank();
  Param a("a", {5}), b("b", {2, 2});
  a.g.data<float>()[1] = 3.f;  // accumulated before binding: kept
  a.w.data<float>()[4] = 7.f;
  ParamGroup group({&a, &b}, c, 0, 3 * sizeof(float));  // 9 floats (padded to a multiple of p) in buckets of 3
  const std::int64_t padded = (9 + p - 1) / p * p;
  CHECK(group.buckets() == (padded + 2) / 3);
  CHECK(group.numel() == 9);
  CHECK(a.g.data<float>()[1] == 3.f);
  CHECK(a.w.data<float>()[4] == 7.f);
  b.g.data<float>()[3] = float(r);  // written through the view
  CHECK(group.flat_grads().data<float>()[5 + 3] == float(r));
  group.reduce_grads();
  CHECK(a.g.data<float>()[1] == 3.f * float(p));
  CHECK(b.g.data<float>()[3] == float(p * (p - 1) / 2));
  std::uint64_t want = 0;  // ring all-reduce per bucket
  for (std::int64_t at = 0; at < padded; at += 3)
    want += 2u * unsigned(p - 1) * 4u * unsigned(std::min<std::int64_t>(3, padded - at)) / unsigned(p);
  CHECK(c.bytes_sent().at("all_reduce") == want);
  CHECK(group.optimizer_bytes() == 2u * 4u * std::size_t(padded));
  group.zero_grad();
  CHECK(a.g.data<float>()[1] == 0.f);
}

TEST_CASE("param group: ZeRO-1 steps equal the replicated optimizer, with 1/p of its moments", "[mpi][comm]") {
  MpiCommunicator c;
  const int p = c.size(), r = c.rank();
  // Two copies of the same parameters: one optimised replicated, one with ZeRO-1.
  auto make = [](Param& w, Param& n) {
    for (std::int64_t i = 0; i < w.w.numel(); ++i) w.w.data<float>()[i] = 0.01f * float(i % 13) - 0.05f;
    for (std::int64_t i = 0; i < n.w.numel(); ++i) n.w.data<float>()[i] = 1.f;
  };
  Param w0("w", {7, 5}), n0("norm", {5}, false), w1("w", {7, 5}), n1("norm", {5}, false);
  make(w0, n0), make(w1, n1);
  ParamGroup rep({&w0, &n0}, c, 0, 1 << 20), z1({&w1, &n1}, c, 1, 1 << 20);
  for (int step = 1; step <= 3; ++step) {
    for (ParamGroup* g : {&rep, &z1}) {
      g->zero_grad();
      float* d = g->flat_grads().data<float>();
      for (std::int64_t i = 0; i < 40; ++i)
        d[i] = 0.1f * float((i * 7 + r * 3 + step) % 11) - 0.5f;  // differs per rank
      g->reduce_grads();
    }
    CHECK(std::abs(rep.grad_sq_norm() - z1.grad_sq_norm()) <= 1e-5 * rep.grad_sq_norm());
    const ops::AdamWSpec spec{.lr = 1e-2, .step = step};
    rep.step(spec, 0.1), z1.step(spec, 0.1);
  }
  // Equal up to the summation order of the two reductions.
  for (std::int64_t i = 0; i < w0.w.numel(); ++i)
    CHECK(w1.w.data<float>()[i] == Approx(w0.w.data<float>()[i]).epsilon(1e-5));
  for (std::int64_t i = 0; i < n0.w.numel(); ++i)
    CHECK(n1.w.data<float>()[i] == Approx(n0.w.data<float>()[i]).epsilon(1e-5));
  CHECK(n1.w.data<float>()[0] != 1.f);  // the norm weights moved (no decay on them)
  const std::int64_t shard = (40 + p - 1) / p;
  CHECK(z1.optimizer_bytes() == 2u * 4u * std::size_t(shard));
  CHECK(c.bytes_sent().at("reduce_scatter") == 3u * unsigned(p - 1) * 4u * unsigned(shard));
}

TEST_CASE("collectives: host integers (64-bit, past 32 bits) gathered, exchanged and broadcast", "[mpi][comm]") {
  MpiCommunicator c;
  const int p = c.size(), r = c.rank();
  const std::int64_t big = std::int64_t(1) << 40;  // both words of the value matter
  const std::vector<std::int64_t> mine = {big + r, -r - 1};
  const auto all = all_gather_ints(c, mine);
  REQUIRE(all.size() == std::size_t(2 * p));
  for (int q = 0; q < p; ++q) CHECK((all[std::size_t(2 * q)] == big + q && all[std::size_t(2 * q + 1)] == -q - 1));

  std::vector<std::int64_t> to(static_cast<std::size_t>(p));
  for (int q = 0; q < p; ++q) to[std::size_t(q)] = big * r + q;  // names sender and receiver
  const auto from = all_to_all_ints(c, to);
  for (int q = 0; q < p; ++q) CHECK(from[std::size_t(q)] == big * q + r);

  std::vector<std::int64_t> v = {r == p - 1 ? big * 3 : 0, r == p - 1 ? -7 : 0};
  broadcast_ints(c, v, p - 1);
  CHECK((v[0] == big * 3 && v[1] == -7));

  CHECK(first_rank_where(c, false) == -1);
  CHECK(first_rank_where(c, r >= 1) == (p > 1 ? 1 : -1));
  CHECK(first_rank_where(c, true) == 0);
}
