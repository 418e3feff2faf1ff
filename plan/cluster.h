// A cluster the cost report prices a run on and the planner plans for: configs/clusters/NAME.yaml
// (every figure cited in its file). docs/COST.md.
#pragma once
#include <cstdint>
#include <string>

#include "config/config.h"

namespace moe {

struct Cluster {
  std::string name, device, file;
  double peak_bf16_tflops = 0, peak_fp8_tflops = 0;  // per device, dense
  double memory_gb = 0, memory_gbps = 0, intra_node_gbps = 0, inter_node_gbps = 0, price_per_device_hour = 0;
  std::int64_t devices_per_node = 1;
  // Share of the peak a training step's GEMMs reach (the planner's compute rate). Cited in
  // the file: a published GEMM measurement, never fitted to a run's answer. local-cpu: 1, the
  // calibration measures a GEMM itself.
  double compute_efficiency = 1.0;
  bool calibrate = false;  // local-cpu: the peak is measured when a run starts
  // Peak TFLOP/s per device for a precision (fp32 and bf16 runs are priced at the BF16 peak,
  // as mixed-precision training is; on a calibrated CPU, the measured f32 GEMM rate).
  double peak_tflops(Precision p) const { return p == Precision::fp8 ? peak_fp8_tflops : peak_bf16_tflops; }
};

// cost.cluster: a name (looked up as clusters/NAME.yaml beside the config file, then in the
// source tree's configs/clusters) or a path to a .yaml file. ConfigError naming the file and key.
Cluster load_cluster(const Config& cfg);

}  // namespace moe
