// `moe data prepare` for text corpora: streamed in bounded memory, shared by the ranks of a
// Communicator, resumable per input file (docs/DATA.md, "Preparation at scale").
//
// Stages, each leaving its results in out_dir/.prepare (a file is complete once renamed from
// its .tmp; a stage's marker is written last):
//   1. scan      each rank reads its share of the input files; per file, the documents that
//                pass the rules (docs_F.bin) and their signatures (sig_F.bin: exact key,
//                quality score, size, MinHash), and its counts (scan_F.json, the marker)
//   2. dedup     exact keys, then MinHash bands, hash-partitioned over the ranks and sorted
//                out of core; candidate pairs are checked against both signatures, and the
//                removals resolved in corpus order as one process would (dedup.json)
//   3. select    the kept documents per file (the quality threshold applied), gathered: the
//                global place of each, and the validation split drawn from it
//   4. tokenizer trained by rank 0 on a seeded sample of the training documents
//   5. encode    each rank its files' kept documents into token spools (tok_F.json)
//   6. shards    rank 0 concatenates the spools in corpus order and writes meta.json
// A document's key is (its file's place in the corpus, its place in the file), so nothing
// written depends on which rank read what.
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "comm/host_values.h"
#include "data/dir_lock.h"
#include "data/external_sort.h"
#include "data/filter.h"
#include "data/permutation.h"
#include "data/prepare_parts.h"
#include "data/quality.h"
#include "kernels/error.h"

namespace moe::data::detail {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kRoundRecords = std::size_t{1} << 16;  // keys a rank sends in one round of a partition
constexpr int kWorkFormat = 1;

// Keys a sorter holds before it spills a run.
std::size_t sort_records(const PrepareOptions& opt) { return std::max<std::size_t>(opt.sort_bytes / 16, 1024); }

std::uint64_t doc_key(std::size_t file, std::uint64_t doc) { return (std::uint64_t(file) << 32) | doc; }
std::size_t file_of(std::uint64_t key) { return static_cast<std::size_t>(key >> 32); }

// Signature records, fixed size (u64 words): the exact key, the quality score (a double's
// bits), the document's bytes, then its MinHash.
enum SigWord : std::size_t { kExact, kScore, kBytes, kMinHash };

void write_atomically(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  std::ofstream out(tmp, std::ios::binary);
  out << bytes;
  MOE_CHECK(out.flush(), DataError, "{}: cannot write (disk full?)", tmp.string());
  out.close();
  fs::rename(tmp, path);
}

// A work file that must be there and whole: else a DataError saying how to start over.
void require(bool ok, const fs::path& file, const char* what) {
  MOE_CHECK(ok, DataError, "{}: {}; delete {} and prepare again", file.string(), what, file.parent_path().string());
}

std::ifstream open_work_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  require(bool(in), file, "missing");
  return in;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in = open_work_file(path);
  return nlohmann::json::parse(in);
}

// A file written under a temporary name and renamed when closed: present means complete.
class Spool {
 public:
  explicit Spool(fs::path path) : path_(std::move(path)), out_(path_.string() + ".tmp", std::ios::binary) {}
  template <class T>
  void put(const T* v, std::size_t n) {
    out_.write(reinterpret_cast<const char*>(v), std::streamsize(n * sizeof(T)));
  }
  void close() {
    MOE_CHECK(out_.flush(), DataError, "{}: cannot write (disk full?)", path_.string());
    out_.close();
    fs::rename(path_.string() + ".tmp", path_);
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

// The work directory and what identifies the preparation it belongs to: the input files
// (names, sizes, times) and every option the output depends on. Another preparation's
// work is deleted, never reused.
class Work {
 public:
  Work(const PrepareOptions& opt, Communicator& comm) : dir_(fs::path(opt.out_dir) / ".prepare") {
    files_ = corpus_files(opt.corpus);
    const FilterOptions& f = opt.filters;
    sig_words_ = kMinHash + (f.near_dup_threshold > 0 ? std::size_t(f.minhash_bands * f.minhash_rows) : 0);
    nlohmann::json plan = {{"format", kWorkFormat},
                           {"vocab_size", opt.vocab_size},
                           {"val_fraction", opt.val_fraction},
                           {"seed", opt.seed},
                           {"shard_tokens", opt.shard_tokens},
                           {"tokenizer", opt.tokenizer},
                           {"sample_bytes", opt.tokenizer_sample_bytes}};
    plan["filters"] = {int(f.invalid_utf8),
                       f.text_field,
                       f.max_bad_fraction,
                       f.max_document_bytes,
                       f.dedup,
                       f.near_dup_threshold,
                       f.shingle_words,
                       f.minhash_bands,
                       f.minhash_rows,
                       f.min_words,
                       f.max_symbol_fraction,
                       f.max_digit_fraction,
                       f.max_repeated_line_fraction,
                       f.max_top_bigram_fraction,
                       f.quality_model,
                       f.quality_train,
                       f.quality_label,
                       f.quality_threshold};
    for (const auto& file : files_) {
      std::error_code size_ec, time_ec;
      const auto size = fs::file_size(file, size_ec);
      const auto time = fs::last_write_time(file, time_ec).time_since_epoch().count();
      plan["files"].push_back({file, size_ec ? 0 : size, time_ec ? 0 : time});
    }
    if (comm.rank() == 0) {
      std::ifstream in(dir_ / "plan.json");
      if (!(in && nlohmann::json::parse(in, nullptr, false) == plan)) {
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        write_atomically(dir_ / "plan.json", plan.dump());
      }
    }
    comm.barrier();
    // This rank's files: the largest first, each to the least loaded rank (the output does not
    // depend on who reads what; only the time does).
    std::vector<std::size_t> order(files_.size());
    std::vector<std::uint64_t> sizes(files_.size()), load(std::size_t(comm.size()), 0);
    for (std::size_t i = 0; i < files_.size(); ++i) order[i] = i, sizes[i] = plan["files"][i][1].get<std::uint64_t>();
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return sizes[a] > sizes[b]; });
    for (std::size_t i : order) {
      const auto r = std::size_t(std::min_element(load.begin(), load.end()) - load.begin());
      load[r] += sizes[i] + 1;
      if (int(r) == comm.rank()) mine_.push_back(i);
    }
    std::sort(mine_.begin(), mine_.end());
  }

  fs::path path(std::string_view what, std::size_t file, std::string_view ext) const {
    return dir_ / fmt::format("{}_{:06d}.{}", what, file, ext);
  }
  fs::path path(std::string_view name) const { return dir_ / name; }
  const std::vector<std::string>& files() const { return files_; }
  const std::vector<std::size_t>& mine() const { return mine_; }
  std::size_t sig_words() const { return sig_words_; }
  void remove() const {  // (the plan first: a directory cut short by a kill is never resumed)
    fs::remove(dir_ / "plan.json");
    fs::remove_all(dir_);
  }

 private:
  fs::path dir_;
  std::vector<std::string> files_;
  std::vector<std::size_t> mine_;
  std::size_t sig_words_ = kMinHash;
};

// ---- 1. scan ---------------------------------------------------------------------------

void scan_file(const PrepareOptions& opt, const Work& w, std::size_t i, const QualityClassifier* quality) {
  const FilterOptions& f = opt.filters;
  FilterReport rep;
  Spool docs(w.path("docs", i, "bin")), sigs(w.path("sig", i, "bin"));
  std::vector<std::uint64_t> rec(w.sig_words());
  read_file_documents(w.files()[i], f, rep.read, [&](std::string&& doc) {
    ++rep.documents;
    if (!passes_rules(doc, f, rep)) return;
    rec[kExact] = f.dedup ? exact_key(doc) : 0;
    rec[kScore] = std::bit_cast<std::uint64_t>(quality ? quality->score(doc) : 1.0);
    rec[kBytes] = doc.size();
    if (w.sig_words() > kMinHash) {
      const auto sig = minhash(doc, f);
      std::copy(sig.begin(), sig.end(), rec.begin() + kMinHash);
    }
    const auto n = static_cast<std::uint32_t>(doc.size());
    docs.put(&n, 1), docs.put(doc.data(), doc.size());
    sigs.put(rec.data(), rec.size());
    ++rep.kept;  // (passed the rules; deduplication and the classifier come later)
  });
  rep.documents += rep.read.utf8.dropped;
  docs.close(), sigs.close();
  write_atomically(w.path("scan", i, "json"), rep.json().dump());
}

// The scan's counts over the corpus, from every file's (what rank read it does not matter).
FilterReport scanned(const PrepareOptions& opt, const Work& w) {
  FilterReport total;
  for (std::size_t i = 0; i < w.files().size(); ++i)
    total.add(FilterReport::from_json(read_json(w.path("scan", i, "json"))));
  check_bad_records(total.read, opt.filters);
  MOE_CHECK(total.documents > 0, DataError, "{}: no text documents found", opt.corpus);
  return total;
}

// ---- 2. dedup --------------------------------------------------------------------------

struct HashKey {
  std::uint64_t hash, key;
  auto operator<=>(const HashKey&) const = default;
};

// One rank's signature records, file after file, in corpus order.
class SigReader {
 public:
  SigReader(const Work& w, std::vector<std::size_t> files) : w_(w), files_(std::move(files)), rec_(w.sig_words()) {}
  bool next() {
    while (true) {
      if (in_.is_open() && in_.read(reinterpret_cast<char*>(rec_.data()), std::streamsize(rec_.size() * 8))) {
        key_ = doc_key(files_[at_ - 1], doc_++);
        return true;
      }
      if (at_ == files_.size()) return false;
      in_ = open_work_file(w_.path("sig", files_[at_++], "bin")), doc_ = 0;
    }
  }
  std::uint64_t key() const { return key_; }
  const std::vector<std::uint64_t>& record() const { return rec_; }

 private:
  const Work& w_;
  std::vector<std::size_t> files_;
  std::vector<std::uint64_t> rec_;
  std::ifstream in_;
  std::size_t at_ = 0;
  std::uint64_t doc_ = 0, key_ = 0;
};

// Any signature record by key (near-duplicate candidates are checked against both): one
// pread of the record, no stream buffer refilled around it.
class SigLookup {
 public:
  explicit SigLookup(const Work& w) : w_(w), rec_(w.sig_words()) {}
  ~SigLookup() {
    for (auto [file, fd] : open_) ::close(fd);
  }
  SigLookup(const SigLookup&) = delete;
  SigLookup& operator=(const SigLookup&) = delete;
  std::vector<std::uint64_t> operator()(std::uint64_t key) {
    const std::size_t file = file_of(key), bytes = rec_.size() * 8;
    auto it = open_.find(file);
    if (it == open_.end()) {
      if (open_.size() >= 64) {  // (a few files' candidates at a time, typically)
        for (auto [f, fd] : open_) ::close(fd);
        open_.clear();
      }
      const auto path = w_.path("sig", file, "bin");
      const int fd = ::open(path.c_str(), O_RDONLY);
      require(fd >= 0, path, "cannot read");
      it = open_.emplace(file, fd).first;
    }
    const auto got = ::pread(it->second, rec_.data(), bytes, off_t((key & 0xffffffffu) * bytes));
    require(got == ssize_t(bytes), w_.path("sig", file, "bin"), "cut short");
    return {rec_.begin() + kMinHash, rec_.end()};
  }

 private:
  const Work& w_;
  std::vector<std::uint64_t> rec_;
  std::map<std::size_t, int> open_;  // file -> descriptor
};

// Sorted keys from a file, asked about in increasing order.
class KeyCursor {
 public:
  explicit KeyCursor(const fs::path& path) : in_(open_work_file(path)) { advance(); }
  bool contains(std::uint64_t key) {
    while (have_ && head_ < key) advance();
    return have_ && head_ == key;
  }

 private:
  void advance() { have_ = bool(in_.read(reinterpret_cast<char*>(&head_), 8)); }
  std::ifstream in_;
  std::uint64_t head_ = 0;
  bool have_ = false;
};

// Every rank's records to the rank `produce` names, kRoundRecords a round from each rank,
// until all have sent all: memory bounded by a round, whatever the number of records.
// produce(out, budget) appends up to budget records to out[rank] and says whether more remain.
template <class Produce, class Take>
void partition(Communicator& comm, Produce&& produce, Take&& take) {
  const auto p = std::size_t(comm.size());
  for (bool more = true; more;) {
    std::vector<std::vector<HashKey>> out(p);
    more = produce(out, kRoundRecords);
    std::vector<std::int64_t> send(p);
    std::size_t total = 0;
    for (std::size_t r = 0; r < p; ++r) send[r] = std::int64_t(out[r].size() * 4), total += out[r].size();
    const auto recv = all_to_all_ints(comm, send);
    std::int64_t received = 0;
    for (auto n : recv) received += n;
    Tensor in = word_buffer(total * sizeof(HashKey)), got = word_buffer(std::size_t(received) * 4);
    auto* at = reinterpret_cast<HashKey*>(in.data<std::int32_t>());
    for (const auto& v : out) at = std::copy(v.begin(), v.end(), at);
    comm.all_to_all_v(got, recv, in, send);
    const auto* r = reinterpret_cast<const HashKey*>(got.data<std::int32_t>());
    for (std::int64_t k = 0; k < received / 4; ++k) take(r[k]);
    more = first_rank_where(comm, more) >= 0;
  }
}

// The records every rank spilled to `spilled`, sorted on rank 0 (sent a round at a time).
void gather_sorted(Communicator& comm, const fs::path& spilled, ExternalSorter<HashKey>& sorted) {
  std::ifstream in = open_work_file(spilled);
  HashKey r{};
  bool more = true;
  partition(
      comm,
      [&](auto& out, std::size_t budget) {
        for (std::size_t n = 0; n < budget && more; ++n)
          if ((more = bool(in.read(reinterpret_cast<char*>(&r), sizeof r)))) out[0].push_back(r);
        return more;
      },
      [&](const HashKey& got) { sorted.push(got); });
}

// Rank 0's count on every rank.
std::int64_t from_rank0(Communicator& comm, std::int64_t count) {
  std::int64_t v = comm.rank() == 0 ? count : 0;
  broadcast_ints(comm, {&v, 1}, 0);
  return v;
}

// Exact duplicates: (exact key, document) partitioned by the key, sorted; in each run of one
// key every document after the first is removed. The removed documents go to rank 0, which
// writes them in key order (removed_exact.bin). Returns their count.
std::int64_t find_exact(const PrepareOptions& opt, const Work& w, Communicator& comm) {
  const auto p = std::uint64_t(comm.size());
  ExternalSorter<HashKey> by_hash(w.path(fmt::format("exact_{}", comm.rank())).string(), sort_records(opt));
  SigReader sigs(w, w.mine());
  bool more = opt.filters.dedup;
  partition(
      comm,
      [&](auto& out, std::size_t budget) {
        for (std::size_t n = 0; n < budget && more; ++n)
          if ((more = sigs.next())) out[sigs.record()[kExact] % p].push_back({sigs.record()[kExact], sigs.key()});
        return more;
      },
      [&](const HashKey& r) { by_hash.push(r); });
  // Every document after the first of its key, spilled (there may be many), then to rank 0.
  const fs::path spilled = w.path(fmt::format("dups_{}.bin", comm.rank()));
  {
    Spool spill(spilled);
    bool first = true;
    std::uint64_t last = 0;
    by_hash.for_each([&](const HashKey& r) {
      const HashKey dup{r.key, 0};
      if (!first && r.hash == last) spill.put(&dup, 1);
      first = false, last = r.hash;
    });
    spill.close();
  }
  ExternalSorter<HashKey> removed(w.path(fmt::format("removed_{}", comm.rank())).string(), sort_records(opt));
  gather_sorted(comm, spilled, removed);
  std::int64_t count = 0;
  if (comm.rank() == 0) {
    Spool out(w.path("removed_exact.bin"));
    removed.for_each([&](const HashKey& r) { out.put(&r.hash, 1), ++count; });
    out.close();
  }
  count = from_rank0(comm, count);
  return count;
}

// Near duplicates: each kept document's band keys partitioned and sorted; the documents of a
// run of one band key are candidates, and a pair whose signatures agree on the threshold's
// share of slots is an edge (earlier, later). With every edge on rank 0, sorted by the later
// document, a document is removed when an edge joins it to an earlier document that was not:
// what one process reading in corpus order removes (filter_documents). Rank 0 writes the
// removed (removed_near.bin); returns their count.
std::int64_t find_near(const PrepareOptions& opt, const Work& w, Communicator& comm) {
  const FilterOptions& f = opt.filters;
  if (f.near_dup_threshold <= 0) {
    if (comm.rank() == 0) write_atomically(w.path("removed_near.bin"), "");
    return 0;
  }
  const auto p = std::uint64_t(comm.size());
  const auto bands = std::size_t(f.minhash_bands), rows = std::size_t(f.minhash_rows);
  ExternalSorter<HashKey> by_band(w.path(fmt::format("bands_{}", comm.rank())).string(), sort_records(opt));
  SigReader sigs(w, w.mine());
  KeyCursor exact(w.path("removed_exact.bin"));
  bool more = true;
  partition(
      comm,
      [&](auto& out, std::size_t budget) {
        for (std::size_t n = 0; n < budget && more;) {
          if (!(more = sigs.next()) || exact.contains(sigs.key())) continue;
          const std::span<const std::uint64_t> sig(sigs.record().begin() + kMinHash, sigs.record().end());
          for (std::size_t b = 0; b < bands; ++b, ++n) {
            const std::uint64_t h = band_key(sig, b, rows);
            out[h % p].push_back({h, sigs.key()});
          }
        }
        return more;
      },
      [&](const HashKey& r) { by_band.push(r); });
  // A group (the documents of one band key, in corpus order) is read as one process reads
  // its bucket: each document is compared with the group's earlier documents that were not
  // near copies of one before them (the group's own survivors), an edge where similar, and
  // joins them where not. Hundreds of copies of one text cost one comparison each.
  // (Signatures are read only for groups of two or more: most band keys are one document's.)
  const fs::path spilled = w.path(fmt::format("edges_{}.bin", comm.rank()));
  Spool edges(spilled);  // (later, earlier): a pair may share every band, and be found in each
  SigLookup lookup(w);
  std::vector<std::pair<std::uint64_t, std::vector<std::uint64_t>>> survivors;  // (signature read when needed)
  std::uint64_t last = 0;
  by_band.for_each([&](const HashKey& r) {
    if (r.hash != last || survivors.empty()) {
      survivors.clear();
      survivors.emplace_back(r.key, std::vector<std::uint64_t>{});
      last = r.hash;
      return;
    }
    const auto sig = lookup(r.key);
    bool near = false;
    for (auto& [key, other] : survivors) {
      if (other.empty()) other = lookup(key);
      if (similarity(sig, other) >= f.near_dup_threshold)
        near = true, edges.put(std::array<HashKey, 1>{HashKey{r.key, key}}.data(), 1);
    }
    if (!near) survivors.emplace_back(r.key, sig);
  });
  edges.close();
  ExternalSorter<HashKey> by_later(w.path(fmt::format("edges_{}", comm.rank())).string(), sort_records(opt));
  gather_sorted(comm, spilled, by_later);
  std::int64_t count = 0;
  if (comm.rank() == 0) {
    std::vector<std::uint64_t> removed;  // in increasing order (8 bytes a near duplicate)
    Spool out(w.path("removed_near.bin"));
    by_later.for_each([&](const HashKey& e) {  // (later, earlier), in order
      if (!removed.empty() && removed.back() == e.hash) return;
      if (std::binary_search(removed.begin(), removed.end(), e.key)) return;  // (the earlier one went)
      removed.push_back(e.hash), out.put(&e.hash, 1);
    });
    out.close();
    count = std::int64_t(removed.size());
  }
  return from_rank0(comm, count);
}

// ---- 3. select -------------------------------------------------------------------------

// Whether a scanned document stays: not a duplicate, and scored at the threshold.
class Selector {
 public:
  Selector(const PrepareOptions& opt, const Work& w, bool classify)
      : exact_(w.path("removed_exact.bin")),
        near_(w.path("removed_near.bin")),
        classify_(classify),
        threshold_(opt.filters.quality_threshold) {}
  enum Verdict { kept, duplicate, low_quality };
  Verdict operator()(std::uint64_t key, const std::vector<std::uint64_t>& rec) {
    if (exact_.contains(key) || near_.contains(key)) return duplicate;
    return classify_ && std::bit_cast<double>(rec[kScore]) < threshold_ ? low_quality : kept;
  }

 private:
  KeyCursor exact_, near_;
  bool classify_;
  double threshold_;
};

// Per file: documents kept, their bytes, those below the quality threshold, and the scores'
// histogram by tenths (of those the deduplication kept).
constexpr std::size_t kKept = 0, kKeptBytes = 1, kLow = 2, kHistogram = 3, kSelectWords = 13;

std::vector<std::int64_t> select(const PrepareOptions& opt, const Work& w, Communicator& comm, bool classify) {
  const std::size_t F = w.files().size();
  std::vector<std::int64_t> mine(F * kSelectWords, 0);
  Selector select(opt, w, classify);
  SigReader sigs(w, w.mine());
  while (sigs.next()) {
    std::int64_t* at = &mine[file_of(sigs.key()) * kSelectWords];
    const auto verdict = select(sigs.key(), sigs.record());
    if (verdict == Selector::duplicate) continue;
    const double score = std::bit_cast<double>(sigs.record()[kScore]);
    if (classify) ++at[kHistogram + std::min<std::size_t>(9, std::size_t(score * 10))];
    if (verdict == Selector::low_quality) ++at[kLow];
    else ++at[kKept], at[kKeptBytes] += std::int64_t(sigs.record()[kBytes]);
  }
  Tensor sum = Tensor::empty({std::int64_t(mine.size())}, DType::f64);  // (counts: exact in doubles up to 2^53)
  std::copy(mine.begin(), mine.end(), sum.data<double>());
  comm.all_reduce_sum(sum);
  for (std::size_t k = 0; k < mine.size(); ++k) mine[k] = std::llround(sum.data<double>()[k]);
  return mine;
}

// This rank's kept documents in corpus order, each with its global place and split.
class KeptDocs {
 public:
  KeptDocs(const PrepareOptions& opt, const Work& w, bool classify, const std::vector<std::int64_t>& selected,
           std::uint64_t val_documents)
      : w_(w),
        sigs_(w, w.mine()),
        select_(opt, w, classify),
        first_(w.files().size() + 1, 0),
        place_(0, opt.seed),
        val_(val_documents) {
    for (std::size_t i = 0; i < w.files().size(); ++i)
      first_[i + 1] = first_[i] + std::uint64_t(selected[i * kSelectWords + kKept]);
    place_ = SeededPermutation(first_.back(), opt.seed);
  }
  // The next kept document into text; false at the end.
  bool next(std::string& text) {
    while (sigs_.next()) {
      const std::size_t file = file_of(sigs_.key());
      if (file != file_) file_ = file, in_ = open_work_file(w_.path("docs", file, "bin")), kept_ = 0;
      std::uint32_t n = 0;
      in_.read(reinterpret_cast<char*>(&n), 4);
      text.resize(n);
      in_.read(text.data(), n);
      require(bool(in_), w_.path("docs", file, "bin"), "cut short");
      if (select_(sigs_.key(), sigs_.record()) != Selector::kept) continue;
      index_ = first_[file] + kept_++;
      return true;
    }
    return false;
  }
  std::uint64_t key() const { return sigs_.key(); }
  std::size_t file() const { return file_; }
  bool val() const { return place_(index_) < val_; }

 private:
  const Work& w_;
  SigReader sigs_;
  Selector select_;
  std::vector<std::uint64_t> first_;  // the global place of each file's first kept document
  SeededPermutation place_;
  std::uint64_t val_;
  std::ifstream in_;
  std::size_t file_ = std::size_t(-1);
  std::uint64_t kept_ = 0, index_ = 0;
};

// ---- 4. tokenizer ----------------------------------------------------------------------

// Each rank writes the sampled training documents of its files (sample_F.txt, as lines); rank
// 0 trains on them in corpus order. A document is in the sample when its keyed hash falls
// under the share that brings the training text to about opt.tokenizer_sample_bytes.
void write_samples(const PrepareOptions& opt, const Work& w, KeptDocs docs, std::uint64_t train_bytes) {
  const double share =
      std::min(1.0, double(opt.tokenizer_sample_bytes) / double(std::max<std::uint64_t>(train_bytes, 1)));
  for (std::size_t f : w.mine()) fs::remove(w.path("sample", f, "txt"));  // (a file without any: no lines)
  std::optional<Spool> out;  // the current file's (files come in order: one open at a time)
  std::size_t file = std::size_t(-1);
  std::vector<std::string> lines;
  for (std::string text; docs.next(text);) {
    const std::uint64_t key = docs.key();
    if (docs.val() || double(XXH64(&key, 8, opt.seed)) >= share * 0x1p64) continue;
    if (docs.file() != file) {
      if (out) out->close();
      out.emplace(w.path("sample", file = docs.file(), "txt"));
    }
    lines.clear();
    append_lines(text, lines);
    for (const auto& l : lines) out->put(l.data(), l.size()), out->put("\n", 1);
  }
  if (out) out->close();
}

std::vector<std::string> sampled_lines(const Work& w) {
  std::vector<std::string> lines;
  for (std::size_t f = 0; f < w.files().size(); ++f) {
    std::ifstream in(w.path("sample", f, "txt"), std::ios::binary);
    for (std::string l; std::getline(in, l);) lines.push_back(std::move(l));
  }
  return lines;
}

// ---- 5. encode -------------------------------------------------------------------------

// One file's token spools and counts, open while its documents are encoded.
struct FileTokens {
  FileTokens(const Work& w, std::size_t file)
      : w(w), file(file), train(w.path("tok", file, "train")), val(w.path("tok", file, "val")) {}
  void add(const std::vector<std::uint32_t>& ids, bool held_out) {
    (held_out ? val : train).put(ids.data(), ids.size());
    (held_out ? val_tokens : train_tokens) += ids.size();
  }
  void finish() {
    train.close(), val.close();
    write_atomically(w.path("tok", file, "json"),
                     nlohmann::json{{"train_tokens", train_tokens}, {"val_tokens", val_tokens}}.dump());
  }
  const Work& w;
  std::size_t file;
  Spool train, val;
  std::uint64_t train_tokens = 0, val_tokens = 0;
};

void encode_files(const Work& w, KeptDocs docs, const Tokenizer& tok) {
  auto encoded = [&](std::size_t f) { return fs::exists(w.path("tok", f, "json")); };  // (before a restart)
  std::optional<FileTokens> out;  // the current file's (files come in order: one open at a time)
  std::size_t file = std::size_t(-1);
  std::vector<std::uint32_t> ids;
  for (std::string text; docs.next(text);) {
    if (docs.file() != file) {
      if (out) out->finish(), out.reset();
      if (!encoded(file = docs.file())) out.emplace(w, file);
    }
    if (!out) continue;
    ids.clear();
    for (int id : tok.encode(text)) ids.push_back(static_cast<std::uint32_t>(id));
    ids.push_back(static_cast<std::uint32_t>(tok.end_of_document()));
    out->add(ids, docs.val());
  }
  if (out) out->finish(), out.reset();
  for (std::size_t f : w.mine())  // files without a kept document
    if (!encoded(f)) FileTokens(w, f).finish();
}

// ---- 6. shards -------------------------------------------------------------------------

void write_shards(const PrepareOptions& opt, const Work& w, PrepareReport& rep) {
  std::vector<double> counts(static_cast<std::size_t>(opt.vocab_size), 0.0);
  std::vector<std::uint32_t> buf(1 << 16);
  for (const bool val : {false, true}) {
    ShardWriter shards(opt, val ? "val" : "train", static_cast<std::uint64_t>(opt.vocab_size));
    for (std::size_t f = 0; f < w.files().size(); ++f) {
      std::ifstream in = open_work_file(w.path("tok", f, val ? "val" : "train"));
      while (in.read(reinterpret_cast<char*>(buf.data()), std::streamsize(buf.size() * 4)) || in.gcount() > 0) {
        const auto n = std::size_t(in.gcount()) / 4;
        for (std::size_t k = 0; k < n; ++k) {
          shards.add(buf[k]);
          if (!val) counts[buf[k]] += 1;
        }
      }
    }
    shards.close();
  }
  for (std::size_t f = 0; f < w.files().size(); ++f) {
    const auto c = read_json(w.path("tok", f, "json"));
    rep.train_tokens += c["train_tokens"].get<std::uint64_t>(), rep.val_tokens += c["val_tokens"].get<std::uint64_t>();
  }
  rep.unigram_entropy = unigram_entropy(counts, rep.train_tokens);
}

// The quality classifier: trained by rank 0 from data.quality_train (out_dir/quality.bin) or
// read from data.quality_model; none without either.
std::unique_ptr<QualityClassifier> classifier(const PrepareOptions& opt, Communicator& comm) {
  const FilterOptions& f = opt.filters;
  if (f.quality_model.empty() && f.quality_train.empty()) return nullptr;
  const std::string model =
      f.quality_model.empty() ? (fs::path(opt.out_dir) / "quality.bin").string() : f.quality_model;
  if (comm.rank() == 0 && f.quality_model.empty()) QualityClassifier::train(f.quality_train, model, opt.seed);
  comm.barrier();
  return std::make_unique<QualityClassifier>(model, f.quality_label);
}

}  // namespace

PrepareReport prepare_text(const PrepareOptions& opt, Communicator& comm) {
  std::optional<DirLock> lock;
  if (comm.rank() == 0) lock.emplace(opt.out_dir, "data.dir"), check_out_dir(opt);  // one prepare at a time
  comm.barrier();
  const Work w(opt, comm);
  const auto quality = classifier(opt, comm);

  PrepareReport rep;
  std::int64_t resumed[2] = {0, 0};  // files scanned and encoded before a restart
  for (std::size_t f : w.mine()) {   // 1. scan
    resumed[0] += fs::exists(w.path("scan", f, "json"));
    resumed[1] += fs::exists(w.path("tok", f, "json"));
    if (!fs::exists(w.path("scan", f, "json"))) scan_file(opt, w, f, quality.get());
  }
  const auto all_resumed = all_gather_ints(comm, resumed);
  for (std::size_t r = 0; r < all_resumed.size(); r += 2)
    rep.resumed_scans += all_resumed[r], rep.resumed_encodes += all_resumed[r + 1];
  rep.files = std::int64_t(w.files().size());
  rep.filters = scanned(opt, w);

  if (!fs::exists(w.path("dedup.json"))) {  // 2. dedup
    const std::int64_t exact = find_exact(opt, w, comm);
    const std::int64_t near = find_near(opt, w, comm);
    if (comm.rank() == 0)
      write_atomically(w.path("dedup.json"), nlohmann::json{{"exact", exact}, {"near", near}}.dump());
    comm.barrier();
  }
  const auto dedup = read_json(w.path("dedup.json"));
  rep.filters.exact_duplicates = dedup["exact"].get<std::int64_t>();
  rep.filters.near_duplicates = dedup["near"].get<std::int64_t>();

  const auto selected = select(opt, w, comm, quality != nullptr);  // 3. select
  std::uint64_t kept = 0, kept_bytes = 0;
  if (quality) rep.filters.quality_histogram.assign(10, 0), rep.filters.quality_model = quality->path();
  for (std::size_t f = 0; f < w.files().size(); ++f) {
    const std::int64_t* at = &selected[f * kSelectWords];
    kept += std::uint64_t(at[kKept]), kept_bytes += std::uint64_t(at[kKeptBytes]);
    rep.filters.low_quality += at[kLow];
    for (std::size_t t = 0; quality && t < 10; ++t) rep.filters.quality_histogram[t] += at[kHistogram + t];
  }
  rep.filters.kept = std::int64_t(kept);
  MOE_CHECK(kept > 0, DataError, "{}: the filters removed every document ({}); relax data.* filter keys", opt.corpus,
            rep.filters.text());
  rep.documents = std::int64_t(kept);
  rep.val_documents = std::llround(opt.val_fraction * double(kept));
  const auto docs = [&] { return KeptDocs(opt, w, quality != nullptr, selected, std::uint64_t(rep.val_documents)); };

  // 4. tokenizer (placed once: a restart after it keeps it)
  const bool sample = opt.tokenizer.empty() && !fs::exists(w.path("tokenizer.done"));
  if (sample) write_samples(opt, w, docs(), std::uint64_t(double(kept_bytes) * (1 - opt.val_fraction)));
  comm.barrier();
  if (comm.rank() == 0 && !fs::exists(w.path("tokenizer.done"))) {
    remove_previous_output(opt.out_dir);
    place_tokenizer(opt, [&] { return sampled_lines(w); });
    write_atomically(w.path("tokenizer.done"), "");
  }
  comm.barrier();
  const Tokenizer tok(Tokenizer::in_dir(opt.out_dir));

  encode_files(w, docs(), tok);  // 5. encode
  comm.barrier();
  if (comm.rank() == 0) {  // 6. shards
    remove_previous_output(opt.out_dir);
    write_shards(opt, w, rep);
    check_val_tokens(opt, rep);
    write_meta(opt, rep, tok);
    w.remove();
  }
  comm.barrier();
  return rep;
}

}  // namespace moe::data::detail
