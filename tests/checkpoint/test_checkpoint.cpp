// Run under mpirun (np 1, 2 and 4): checkpoints against uninterrupted training.
//   - 20 steps straight vs 10, save, resume, 10 more under the same layout: every weight,
//     both AdamW moments and router biases bitwise equal (world size 1; ep 2 + zero 1 at 4).
//   - save under one layout, resume under another (sub-communicators of the world), equal to
//     the uninterrupted run within 1e-5.
//   - fine-tuning: init_from's weights evaluate to the loss the checkpoint recorded, and
//     frozen tensors stay bitwise unchanged.
//   - a save that hits a full disk (a file-size limit) fails with one line and leaves the
//     previous checkpoint the latest, loadable.
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/store.h"
#include "trainer/run_meta.h"
#include "data/prepare.h"
#include "tests/support/corpus.h"
#include "tests/support/testing.h"
#include "trainer/train.h"

using namespace moe;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  MpiCommunicator world;
  std::string dir;
  Fixture() : dir("ckpt_np" + std::to_string(world.size())) {
    world.barrier();  // every rank is done with the previous case's files
    if (world.rank() == 0) {
      fs::remove_all(dir);
      fs::create_directories(dir);
      testing::write_corpus(dir + "/corpus.txt", 300);
      data::prepare(
          {.corpus = dir + "/corpus.txt", .out_dir = dir + "/data", .vocab_size = 300, .val_fraction = 0.1, .seed = 3});
    }
    world.barrier();
  }
  // A micro MoE; global batch 8 sequences = dp x grad_accum x 2.
  Config config(int dp, std::vector<std::string> extra) const {
    std::vector<std::string> kv = testing::micro_moe(
        {"data.dir=" + dir + "/data", "train.log_every=1000", "train.eval_batches=1", "train.warmup_steps=2",
         "train.micro_batch=2", "train.grad_accum=" + std::to_string(8 / (2 * dp))});
    kv.insert(kv.end(), extra.begin(), extra.end());
    return parse_config("", "test", kv);
  }
};

// A communicator of the first n world ranks (the others get MPI_COMM_NULL and sit out).
struct SubWorld {
  MPI_Comm comm = MPI_COMM_NULL;
  SubWorld(MpiCommunicator& world, int n) {
    MPI_Comm_split(world.comm(), world.rank() < n ? 0 : MPI_UNDEFINED, world.rank(), &comm);
  }
  ~SubWorld() {
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

using Weights = std::map<std::string, Tensor>;

Weights run(const Config& cfg, MpiCommunicator& comm, TrainResult* out = nullptr) {
  Trainer t(cfg, comm);
  TrainResult r = t.run();
  Weights w = t.gather_weights(true);
  if (out) *out = std::move(r);
  return w;
}

void require_same_names(const Weights& a, const Weights& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, _] : a) REQUIRE(b.count(name) == 1);
}

}  // namespace

TEST_CASE("checkpoint: 10 steps, save, resume, 10 more is bitwise the 20-step run", "[mpi][checkpoint]") {
  Fixture f;
  const int P = f.world.size();
  // At 4 ranks the multi-rank layout with experts and a sharded optimizer.
  const std::vector<std::string> layout =
      P == 4 ? std::vector<std::string>{"parallel.ep=2", "parallel.zero=1"} : std::vector<std::string>{};
  auto with = [&](std::vector<std::string> kv) {
    kv.insert(kv.end(), layout.begin(), layout.end());
    return kv;
  };
  const std::string dir = f.dir + "/bitwise";
  TrainResult straight, resumed;
  const Weights a = run(f.config(P, with({"train.steps=20"})), f.world, &straight);
  TrainResult first;
  run(f.config(P, with({"train.steps=20", "train.stop_at=10", "checkpoint.dir=" + dir})), f.world, &first);
  const Weights b = run(f.config(P, with({"train.steps=20", "checkpoint.dir=" + dir})), f.world, &resumed);
  CHECK(resumed.resume.start_step == 10);
  CHECK(resumed.resume.resumed_from == dir + "/step_00000010.h5");
  REQUIRE(resumed.losses.size() == 10);
  for (std::size_t s = 0; s < 10; ++s) CHECK(resumed.losses[s] == straight.losses[10 + s]);
  require_same_names(a, b);
  for (const auto& [name, w] : a) {
    INFO(name);
    CHECK(testing::max_rel_err(b.at(name), w, 1e-30) == 0.0);
  }
  CHECK(resumed.tokens == straight.tokens);
  // The cost counters carry over: tokens and FLOPs of both launches, device-hours on top of
  // what the checkpoint recorded (as of the start of its own save).
  CHECK(resumed.cost.tokens == straight.cost.tokens);
  CHECK(resumed.cost.flops == straight.cost.flops);
  CHECK(first.cost.tokens == straight.cost.tokens / 2);
  const RunMeta saved = read_run_meta(dir + "/step_00000010.h5");
  CHECK(saved.device_hours > 0);
  CHECK(saved.device_hours <= first.cost.device_hours());
  CHECK(resumed.cost.device_hours() > saved.device_hours);
  CHECK(read_run_meta(dir + "/step_00000020.h5").step == 20);
}

TEST_CASE("checkpoint: saved under one layout, resumed under another", "[mpi][checkpoint]") {
  Fixture f;
  const int P = f.world.size();
  if (P == 1) return;  // needs two layouts
  // np 2: dp2 -> ep2 folded in dp2. np 4: dp4 with zero 1 -> dp2 (two of the four ranks).
  const std::vector<std::string> save_layout =
      P == 4 ? std::vector<std::string>{"parallel.zero=1"} : std::vector<std::string>{};
  const int resume_ranks = P == 4 ? 2 : 2;
  const std::vector<std::string> resume_layout =
      P == 4 ? std::vector<std::string>{} : std::vector<std::string>{"parallel.ep=2"};
  const std::string dir = f.dir + "/relayout";
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  TrainResult straight;
  const Weights a = run(f.config(P, with({"train.steps=6"}, save_layout)), f.world, &straight);
  run(f.config(P, with({"train.steps=6", "train.stop_at=3", "checkpoint.dir=" + dir}, save_layout)), f.world);
  SubWorld sub(f.world, resume_ranks);
  if (sub.comm != MPI_COMM_NULL) {
    MpiCommunicator comm(sub.comm);
    TrainResult resumed;
    const Weights b =
        run(f.config(resume_ranks, with({"train.steps=6", "checkpoint.dir=" + dir}, resume_layout)), comm, &resumed);
    CHECK(resumed.resume.start_step == 3);
    for (std::size_t s = 0; s < 3; ++s) CHECK(resumed.losses[s] == Approx(straight.losses[3 + s]).epsilon(1e-5));
    require_same_names(a, b);
    for (const auto& [name, w] : a) {
      if (name.rfind("exp_avg", 0) == 0) continue;  // moments: checked by the bitwise case; here the weights they made
      INFO(name);
      CHECK(testing::max_rel_err(b.at(name), w) <= 1e-5);
    }
  }
  f.world.barrier();
}

// Straight 6 steps under `save` on the first save_ranks ranks (the reference), the first 3
// there with a checkpoint, the last 3 resumed under `resume` on the first resume_ranks: loss
// and weights within 1e-5 of the reference.
void relayout(Fixture& f, const std::string& dir, int save_ranks, const std::vector<std::string>& save,
              int resume_ranks, const std::vector<std::string>& resume) {
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::vector<std::string> model = {"model.n_kv_heads=2"};  // tp 2 needs whole kv heads
  TrainResult straight;
  Weights a;
  {
    SubWorld sub(f.world, save_ranks);
    if (sub.comm != MPI_COMM_NULL) {
      MpiCommunicator comm(sub.comm);
      const int dp = save.empty() ? save_ranks : 1;  // the tp/pp layouts here have dp 1
      a = run(f.config(dp, with(with({"train.steps=6"}, save), model)), comm, &straight);
      run(f.config(dp, with(with({"train.steps=6", "train.stop_at=3", "checkpoint.dir=" + dir}, save), model)), comm);
    }
  }
  // The reference weights and losses travel from world rank 0 to the resuming ranks.
  std::string names;
  for (const auto& [name, w] : a) names += name + "\n";
  names = f.world.broadcast_text(names, 0);
  Tensor losses = Tensor::zeros({6}, DType::f64);
  if (f.world.rank() == 0) std::copy(straight.losses.begin(), straight.losses.end(), losses.data<double>());
  f.world.broadcast(losses, 0);
  SubWorld sub(f.world, resume_ranks);
  std::map<std::string, Tensor> resumed_weights;
  TrainResult resumed;
  if (sub.comm != MPI_COMM_NULL) {
    MpiCommunicator comm(sub.comm);
    const int dp = resume.empty() ? resume_ranks : 1;
    resumed_weights =
        run(f.config(dp, with(with({"train.steps=6", "checkpoint.dir=" + dir}, resume), model)), comm, &resumed);
  }
  std::istringstream in(names);
  for (std::string name; std::getline(in, name);) {
    Tensor ref = f.world.rank() == 0 ? a.at(name) : Tensor();
    Tensor shape = Tensor::zeros({4}, DType::i32);
    if (f.world.rank() == 0)
      for (int d = 0; d < ref.ndim(); ++d) shape.data<std::int32_t>()[d] = static_cast<std::int32_t>(ref.size(d));
    f.world.broadcast(shape, 0);
    Shape dims;
    for (int d = 0; d < 4 && shape.data<std::int32_t>()[d] > 0; ++d) dims.push_back(shape.data<std::int32_t>()[d]);
    if (f.world.rank() != 0) ref = Tensor::empty(dims, DType::f32);
    f.world.broadcast(ref, 0);
    if (sub.comm == MPI_COMM_NULL || name.rfind("exp_avg", 0) == 0) continue;
    INFO(name);
    REQUIRE(resumed_weights.count(name) == 1);
    CHECK(testing::max_rel_err(resumed_weights.at(name), ref) <= 1e-5);
  }
  if (sub.comm != MPI_COMM_NULL) {
    CHECK(resumed.resume.start_step == 3);
    for (std::size_t s = 0; s < 3; ++s) CHECK(resumed.losses[s] == Approx(losses.data<double>()[3 + s]).epsilon(1e-5));
  }
  f.world.barrier();
}

TEST_CASE("checkpoint: tensor- and pipeline-parallel checkpoints resume at world size 1, and back",
          "[mpi][checkpoint]") {
  Fixture f;
  const int P = f.world.size();
  if (P == 1) return;
  if (P == 2) {
    relayout(f, f.dir + "/tp2_tp1", 2, {"parallel.tp=2"}, 1, {});
    relayout(f, f.dir + "/pp2_pp1", 2, {"parallel.pp=2"}, 1, {});
    relayout(f, f.dir + "/tp1_pp2", 1, {}, 2, {"parallel.pp=2"});
  } else {
    relayout(f, f.dir + "/pp2tp2_tp1", 4, {"parallel.pp=2", "parallel.tp=2"}, 1, {});
    relayout(f, f.dir + "/tp1_tp2ep2", 1, {}, 2, {"parallel.tp=2", "parallel.ep=2"});
  }
}

TEST_CASE("checkpoint: fine-tuning starts from the checkpoint's weights and keeps frozen tensors",
          "[mpi][checkpoint]") {
  Fixture f;
  const int P = f.world.size();
  const std::string dir = f.dir + "/base", ckpt = dir + "/step_00000008.h5";
  run(f.config(P, {"train.steps=8", "checkpoint.dir=" + dir}), f.world);
  const RunMeta meta = read_run_meta(ckpt);
  TrainResult r;
  const Weights tuned = run(f.config(P, {"train.steps=4", "checkpoint.init_from=" + ckpt, "train.lr=1e-3",
                                         "train.freeze=['*embed_tokens*', '*.mlp.gate.weight']"}),
                            f.world, &r);
  CHECK(r.resume.init_from == ckpt);
  CHECK(r.resume.start_step == 0);
  CHECK(r.resume.init_val_loss == meta.val_loss);  // the same weights on the same validation data
  // The checkpoint's own weights: resuming its run at its last step trains nothing.
  const Weights saved = run(f.config(P, {"train.steps=8", "checkpoint.dir=" + dir}), f.world);
  int frozen = 0;
  for (const auto& [name, w] : saved) {
    if (name.find("e_score_correction_bias") != std::string::npos || name.rfind("exp_avg", 0) == 0) continue;
    INFO(name);
    if (name.find("embed_tokens") != std::string::npos || name.find(".mlp.gate.weight") != std::string::npos) {
      CHECK(testing::max_rel_err(tuned.at(name), w, 1e-30) == 0.0);
      ++frozen;
    } else {
      CHECK(testing::max_rel_err(tuned.at(name), w) > 0.0);
    }
  }
  CHECK(frozen == 3);  // the embedding and two routers
}

TEST_CASE("checkpoint: a save that runs out of space leaves the previous checkpoint the latest", "[mpi][checkpoint]") {
  Fixture f;
  // Every rank gets the file-size limit: with several, rank 0 fails to give the file its size
  // (holes_driver.h) and tells the others, who must not wait for it.
  const std::string dir = f.dir + "/full";
  run(f.config(1, {"train.steps=8", "train.stop_at=4", "checkpoint.dir=" + dir}), f.world);
  const auto size = fs::file_size(dir + "/step_00000004.h5");
  // The "disk" fills half-way through the next file: writes past the limit fail with EFBIG.
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = size / 2;
  setrlimit(RLIMIT_FSIZE, &small);
  std::string error;
  try {
    run(f.config(1, {"train.steps=8", "checkpoint.dir=" + dir}), f.world);
  } catch (const CheckpointError& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  INFO(error);
  CHECK(error.find("step_00000008.h5.tmp") != std::string::npos);
  CHECK(error.find('\n') == std::string::npos);  // one line
  CHECK(!fs::exists(dir + "/step_00000008.h5"));
  REQUIRE(ckpt::latest(dir) == dir + "/step_00000004.h5");
  // Still loadable: the next launch resumes from it and finishes.
  TrainResult r;
  run(f.config(1, {"train.steps=8", "checkpoint.dir=" + dir}), f.world, &r);
  CHECK(r.resume.start_step == 4);
  CHECK(r.steps == 8);
  CHECK(!fs::exists(dir + "/step_00000008.h5.tmp"));  // the stale temporary was cleared
}

TEST_CASE("checkpoint: every way ranks can split a dataset writes the bytes HDF5's own filter accepts",
          "[mpi][checkpoint]") {
  // Rank 0 creates the file with holes (holes_driver.h), then each chunk is written whole by
  // one rank, pieces exchanged (chunk_writer.h): flat ranges cut inside chunks, a dataset
  // rank 0 holds alone, and a window per rank (a tensor-parallel shard, written by the ranks
  // in turn). Read back two ways: our chunk reader (windows included), and HDF5's filter
  // pipeline (read_group), which checks every chunk's Fletcher32 itself. Written at once and
  // behind (start_write, then the slices' memory scribbled over before finish: the file holds
  // what it held at the start), with a root attribute of 300 KB (HDF5's dense storage).
  MpiCommunicator world;
  const int p = world.size(), r = world.rank();
  for (const auto& [with_window, async] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
    INFO("with a window: " << with_window << ", asynchronous: " << async);
    const std::string path = "ckpt_split_np" + std::to_string(p) + ".h5";
    // "big": 2 chunks of 300 rows of 7000 (the last 299 rows: stored at full size); ranks
    // split it unevenly so ranges start and end inside chunks. "one": rank 0 writes it all.
    // "window": each rank a block of columns (a tensor-parallel shard); "rows": a block of rows.
    std::vector<ckpt::Dataset> datasets = {{"w/big", {599, 7000}}, {"w/one", {5, 3}}};
    if (with_window) datasets.push_back({"w/window", {6, 4 * p}}), datasets.push_back({"w/rows", {4 * p, 5}});
    std::map<std::string, Tensor> full;
    for (std::size_t i = 0; i < datasets.size(); ++i)
      full[datasets[i].name] = testing::cast(testing::random(datasets[i].shape, 50 + i, 1.0), DType::f32);
    const std::int64_t n = 599 * 7000, cut = n * (r + 1) * (r + 1) / ((p) * (p));  // rank r: [cut(r-1), cut(r))
    const std::int64_t begin = r == 0 ? 0 : n * r * r / (p * p);
    std::vector<ckpt::Slice> mine = {{"w/big", begin, cut, full["w/big"].data<float>() + begin, {}, {}}};
    if (r == 0) mine.push_back({"w/one", 0, 15, full["w/one"].data<float>(), {}, {}});
    Tensor block = Tensor::empty({6, 4}, DType::f32);
    if (with_window) {
      for (std::int64_t i = 0; i < 6; ++i)
        for (std::int64_t j = 0; j < 4; ++j)
          block.data<float>()[i * 4 + j] = full["w/window"].data<float>()[i * 4 * p + 4 * r + j];
      mine.push_back({"w/window", 0, 24, block.data<float>(), {6, 4}, {0, 4 * r}});
      // Whole rows: a window the writer turns into a flat range.
      mine.push_back({"w/rows", 0, 20, full["w/rows"].data<float>() + 20 * r, {4, 5}, {4 * r, 0}});
    }
    ckpt::Meta meta;
    meta.attrs["long"] = std::string(300000, 'x');
    std::map<std::string, Tensor> written;
    for (const auto& [name, t] : full) {
      written[name] = Tensor::empty(t.shape(), t.dtype());
      written[name].copy_from(t);
    }
    if (async) {
      ckpt::PendingWrite pending = ckpt::start_write(path, world, meta, datasets, mine, {}, /*hold_ms=*/50);
      for (auto& [name, t] : full) std::memset(t.raw(), 0, t.nbytes());  // the next step's changes
      std::memset(block.raw(), 0, block.nbytes());
      CHECK(pending.active());
      pending.finish(world);
      CHECK(!pending.active());
    } else {
      ckpt::write(path, world, meta, datasets, mine);
    }
    world.barrier();
    CHECK(std::get<std::string>(ckpt::read_meta(path).attrs.at("long")) == std::get<std::string>(meta.attrs["long"]));
    full = written;

    std::map<std::string, Tensor> back;
    std::vector<ckpt::Slice> all;
    for (const auto& d : datasets) {
      back[d.name] = Tensor::empty(d.shape, DType::f32);
      all.push_back({d.name, 0, back[d.name].numel(), back[d.name].data<float>(), {}, {}});
    }
    ckpt::read(path, datasets, all);
    const auto hdf5 = ckpt::read_group(path, "w");
    REQUIRE(hdf5.size() == datasets.size());
    for (const auto& d : datasets) {
      INFO(d.name);
      CHECK(std::memcmp(back[d.name].raw(), full[d.name].raw(), full[d.name].nbytes()) == 0);
      REQUIRE(hdf5.count(d.name.substr(2)) == 1);
      CHECK(std::memcmp(hdf5.at(d.name.substr(2)).raw(), full[d.name].raw(), full[d.name].nbytes()) == 0);
    }
    world.barrier();
    if (r == 0) fs::remove(path);
  }
}

TEST_CASE("checkpoint: slices that leave part of a dataset unwritten fail the save on every rank",
          "[mpi][checkpoint]") {
  MpiCommunicator world;
  const std::string path = "ckpt_gap_np" + std::to_string(world.size()) + ".h5";
  // 40 rows of 70000: 2 chunks. Rank 0 holds everything but the last element.
  const std::vector<ckpt::Dataset> datasets = {{"w/gap", {40, 70000}}};
  Tensor t = testing::cast(testing::random({40, 70000}, 9, 1.0), DType::f32);
  std::vector<ckpt::Slice> mine;
  if (world.rank() == 0) mine.push_back({"w/gap", 0, t.numel() - 1, t.data<float>(), {}, {}});
  std::string error;
  try {
    ckpt::write(path, world, ckpt::Meta{}, datasets, mine);
  } catch (const CheckpointError& e) {
    error = e.what();
  }
  INFO(error);
  CHECK(error.find("w/gap: the ranks' slices do not cover the chunk at row") != std::string::npos);
  world.barrier();
  if (world.rank() == 0) fs::remove(path);
}
