#include "trainer/metrics.h"

#include <chrono>
#include <filesystem>
#include <sstream>
#include <vector>

#include "kernels/error.h"
#include "trainer/atomic_file.h"

namespace moe {

Metrics::Metrics(const std::string& dir, std::int64_t resume_step) : path_(dir + "/metrics.jsonl") {
  std::filesystem::create_directories(dir);
  // Keep the lines up to the step resumed from; a fresh run (resume_step 0) starts a new file.
  std::string kept;
  if (std::ifstream in(path_); in && resume_step > 0) {
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("step", std::int64_t{0}) <= resume_step) kept += line + "\n";
    }
  }
  write_atomically(path_, kept);
  jsonl_.open(path_, std::ios::app);
  MOE_CHECK(jsonl_.good(), DataError, "{}: cannot write metrics", path_);
  tb_ = std::make_unique<EventWriter>(dir + "/tb");
}

void Metrics::log(const nlohmann::json& r) {
  if (!enabled()) return;
  jsonl_ << r.dump() << "\n" << std::flush;
  const auto step = r.at("step").get<std::int64_t>();
  const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& [key, value] : r.items()) {
    if (key == "step") continue;
    if (value.is_number()) tb_->scalar(key, value.get<double>(), step, wall);
    else if (value.is_object())
      for (const auto& [inner, v] : value.items())
        if (v.is_number()) tb_->scalar(key + "/" + inner, v.get<double>(), step, wall);
  }
  if (r.contains("expert_loads")) {
    std::vector<double> loads;
    for (const auto& layer : r["expert_loads"])
      for (const auto& x : layer) loads.push_back(x.get<double>());
    tb_->histogram("expert_loads", loads, step, wall);
  }
  tb_->flush();
}

}  // namespace moe
