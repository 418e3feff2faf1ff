// Sorting more fixed-size records than memory should hold: records gather in a buffer of
// bounded size, which is sorted and written out as a run when full; reading merges the runs
// (a k-way merge holding one block of each, at most 64 runs at once: more are merged first).
// What `moe data prepare` sorts its deduplication
// keys with, so that their memory does not grow with the corpus.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <queue>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "kernels/error.h"

namespace moe::data {

template <class Record>
class ExternalSorter {
  static_assert(std::is_trivially_copyable_v<Record>);

 public:
  // Runs are written as `prefix`_N.run and removed when the sorter goes.
  ExternalSorter(std::string prefix, std::size_t max_records) : prefix_(std::move(prefix)), max_(max_records) {
    buf_.reserve(std::min<std::size_t>(max_, 1 << 16));
  }
  ~ExternalSorter() {
    for (const auto& r : runs_) std::filesystem::remove(r);
  }
  ExternalSorter(const ExternalSorter&) = delete;
  ExternalSorter& operator=(const ExternalSorter&) = delete;

  void push(const Record& r) {
    buf_.push_back(r);
    if (buf_.size() >= max_) spill();
  }
  std::uint64_t size() const { return spilled_ + buf_.size(); }

  // Every record pushed, in order (operator<), to f. Once.
  template <class F>
  void for_each(F&& f) {
    while (runs_.size() > kMaxMerge) merge_front();  // (so the merge's blocks are bounded too)
    std::sort(buf_.begin(), buf_.end());
    merge(runs_, buf_, f);
    buf_.clear();
  }

 private:
  static constexpr std::size_t kMaxMerge = 64;  // runs merged at once: 64 blocks of 64 KiB in memory

  // The first kMaxMerge runs into one.
  void merge_front() {
    const std::vector<std::string> front(runs_.begin(), runs_.begin() + kMaxMerge);
    const std::string path = fmt::format("{}_{}.run", prefix_, next_run_++);
    {
      std::ofstream out(path, std::ios::binary);
      std::vector<Record> block;
      merge(front, {}, [&](const Record& r) {
        block.push_back(r);
        if (block.size() == Reader::kBlock) write(out, block);
      });
      write(out, block);
      MOE_CHECK(out.flush(), DataError, "{}: cannot write a sort run (disk full?)", path);
    }
    for (const auto& r : front) std::filesystem::remove(r);
    runs_.erase(runs_.begin(), runs_.begin() + kMaxMerge);
    runs_.push_back(path);
  }

  static void write(std::ofstream& out, std::vector<Record>& block) {
    out.write(reinterpret_cast<const char*>(block.data()), std::streamsize(block.size() * sizeof(Record)));
    block.clear();
  }

  // The records of `runs` and of the sorted `mem`, in order, to f.
  template <class F>
  static void merge(const std::vector<std::string>& runs, const std::vector<Record>& mem, F&& f) {
    std::vector<Reader> readers;
    readers.reserve(runs.size());
    for (const auto& r : runs) readers.emplace_back(r);
    auto later = [&](std::size_t a, std::size_t b) { return readers[b].head < readers[a].head; };
    std::priority_queue<std::size_t, std::vector<std::size_t>, decltype(later)> heap(later);
    for (std::size_t i = 0; i < readers.size(); ++i)
      if (readers[i].next()) heap.push(i);
    std::size_t b = 0;
    while (!heap.empty() || b < mem.size()) {
      if (heap.empty() || (b < mem.size() && mem[b] < readers[heap.top()].head)) {
        f(mem[b++]);
        continue;
      }
      const std::size_t i = heap.top();
      heap.pop();
      f(readers[i].head);
      if (readers[i].next()) heap.push(i);
    }
  }

  // One run, read a block at a time.
  struct Reader {
    explicit Reader(const std::string& path) : in(path, std::ios::binary) {
      MOE_CHECK(in, DataError, "{}: cannot read back a sort run", path);
    }
    bool next() {
      if (at == block.size()) {
        block.resize(kBlock);
        in.read(reinterpret_cast<char*>(block.data()), std::streamsize(kBlock * sizeof(Record)));
        block.resize(static_cast<std::size_t>(in.gcount()) / sizeof(Record));
        at = 0;
        if (block.empty()) return false;
      }
      head = block[at++];
      return true;
    }
    static constexpr std::size_t kBlock = 4096;
    std::ifstream in;
    std::vector<Record> block;
    std::size_t at = 0;
    Record head{};
  };

  void spill() {
    std::sort(buf_.begin(), buf_.end());
    const std::string path = fmt::format("{}_{}.run", prefix_, next_run_++);
    std::ofstream out(path, std::ios::binary);
    spilled_ += buf_.size();
    write(out, buf_);
    MOE_CHECK(out.flush(), DataError, "{}: cannot write a sort run (disk full?)", path);
    runs_.push_back(path);
  }

  std::string prefix_;
  std::size_t max_;
  std::vector<Record> buf_;
  std::vector<std::string> runs_;
  std::uint64_t spilled_ = 0;
  std::size_t next_run_ = 0;
};

}  // namespace moe::data
