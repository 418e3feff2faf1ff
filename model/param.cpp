#include "model/param.h"

namespace moe {
namespace {
thread_local bool shapes_only = false;
}  // namespace

Param::Param(std::string n, Shape shape, bool weight_decay)
    : name(std::move(n)),
      w(shapes_only ? Tensor() : Tensor::zeros(shape, DType::f32)),
      g(shapes_only ? Tensor() : Tensor::zeros(shape, DType::f32)),
      decay(weight_decay),
      shape_(std::move(shape)) {}

Param::ShapesOnly::ShapesOnly() : before_(shapes_only) { shapes_only = true; }
Param::ShapesOnly::~ShapesOnly() { shapes_only = before_; }

}  // namespace moe
