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
class ShapeError : public Error {
  using Error::Error;
};  // op called with wrong shapes/dtypes
class DeviceError : public Error {
  using Error::Error;
};  // CUDA missing, failed, or wrong device
class ConfigError : public Error {
  using Error::Error;
};  // bad YAML, key, type or value
class DataError : public Error {
  using Error::Error;
};  // bad or missing corpus/shards
class CommError : public Error {
  using Error::Error;
};  // MPI/NCCL failure or bad layout
class CheckpointError : public Error {
  using Error::Error;
};  // unreadable, damaged or mismatched checkpoint
class TrainingError : public Error {
  using Error::Error;
};  // a run that cannot go on (e.g. diverged), same on every rank
class InternalError : public Error {
  using Error::Error;
};  // a broken invariant: a bug in moe, not in its input

}  // namespace moe

// MOE_CHECK(cond, ErrorType, "fmt", args...): validate user input at API boundaries, throw
// with context that says what to do.
#define MOE_CHECK(cond, ErrorType, ...)                     \
  do {                                                      \
    if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__)); \
  } while (0)

// MOE_ASSERT(cond, "fmt", args...): an internal invariant (never the user's input): throws
// InternalError "file:line: internal error: <message> (<cond>)".
#define MOE_ASSERT(cond, ...)                                                                                  \
  do {                                                                                                         \
    if (!(cond))                                                                                               \
      throw ::moe::InternalError(                                                                              \
          fmt::format("{}:{}: internal error: {} ({})", __FILE__, __LINE__, fmt::format(__VA_ARGS__), #cond)); \
  } while (0)
