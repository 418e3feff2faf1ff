// Typed errors with context. Library code throws; only main() decides the exit code.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace moe {

// Base of every error moe throws on purpose. what() is one line meant for the user.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class ShapeError : public Error { using Error::Error; };       // op called with wrong shapes/dtypes
class DeviceError : public Error { using Error::Error; };      // CUDA missing, failed, or wrong device
class ConfigError : public Error { using Error::Error; };      // bad YAML, key, type or value
class DataError : public Error { using Error::Error; };        // bad or missing corpus/shards
class CommError : public Error { using Error::Error; };        // MPI/NCCL failure or bad layout
class CheckpointError : public Error { using Error::Error; };  // unreadable, damaged or mismatched checkpoint
class TrainingError : public Error { using Error::Error; };    // a run that cannot go on (e.g. diverged), same on every rank

}  // namespace moe

// MOE_CHECK(cond, ErrorType, "fmt", args...): validate at API boundaries, throw with context.
#define MOE_CHECK(cond, ErrorType, ...)                                      \
  do {                                                                       \
    if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__));                  \
  } while (0)
