// One config section as a JSON object (key -> number, bool or string), for tools that hand
// the model to another program: the PyTorch oracle and the benchmark peer.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "config/config.h"

namespace moe {

inline nlohmann::json config_section_json(const Config& cfg, const std::string& section) {
  nlohmann::json out = nlohmann::json::object();
  const std::string prefix = section + ".";
  for (const auto& [key, value] : config_values(cfg))
    if (key.rfind(prefix, 0) == 0)  // YAML scalars that are not JSON (names) stay strings
      out[key.substr(prefix.size())] =
          nlohmann::json::accept(value) ? nlohmann::json::parse(value) : nlohmann::json(value);
  return out;
}

}  // namespace moe
