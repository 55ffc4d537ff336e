// Tensor: a shared handle to a node (shape, contiguous data, gradient, and, when grad is on, the
// inputs and backward closure of the op that made it). Copies of a handle share everything.
// Models run in float; gradient checks run the same code in double.
//
// Autograd rules (each one cost somebody a bug):
//  - ops call out.set_backward(inputs, fn); with grad off (NoGradGuard) or no input needing a
//    gradient nothing is recorded, so inference keeps no tape;
//  - closures take the output as their parameter and never capture it (no shared_ptr cycles);
//  - closures accumulate (+=) into input gradients;
//  - backward() frees the graph as it goes: each node's closure, inputs and gradient (except
//    leaves') are released once used.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "lib/core/check.h"
#include "lib/core/memory.h"

namespace vlm {

using Shape = std::vector<int64_t>;
int64_t numel_of(const Shape& shape);
std::string shape_str(const Shape& shape);

bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class Rng;

// A counted, 64-byte aligned array.
template <typename T>
class Buffer {
 public:
  Buffer(int64_t n, MemCat cat, bool zero);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return n_; }

 private:
  T* data_;
  int64_t n_;
  MemCat cat_;
};

template <typename T>
class TensorT;
template <typename T>
using BackwardFn = std::function<void(const TensorT<T>& out)>;

template <typename T>
struct Node {
  Shape shape;
  std::shared_ptr<Buffer<T>> data;
  std::shared_ptr<Buffer<T>> grad;
  bool requires_grad = false;
  std::vector<TensorT<T>> inputs;
  BackwardFn<T> backward_fn;
  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();  // tears long chains down iteratively, not by recursion
};

template <typename T>
class TensorT {
 public:
  using Scalar = T;
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  using Map = Eigen::Map<Array>;
  using ConstMap = Eigen::Map<const Array>;

  TensorT() = default;  // undefined (no node): used for optional inputs such as a missing bias

  // Factories. Data is counted under current_mem_cat().
  static TensorT empty(const Shape& shape);
  static TensorT zeros(const Shape& shape);
  static TensorT full(const Shape& shape, T value);
  static TensorT from(const Shape& shape, const std::vector<T>& values);
  static TensorT randn(const Shape& shape, Rng& rng, double stddev = 1.0);
  static TensorT uniform(const Shape& shape, Rng& rng, double lo, double hi);
  // A tensor that shares `storage_of`'s data under another shape (same numel): the basis of reshape.
  static TensorT view_of(const TensorT& storage_of, const Shape& shape);

  bool defined() const { return node_ != nullptr; }
  const Shape& shape() const { return node().shape; }
  int ndim() const { return static_cast<int>(node().shape.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return node().data->size(); }

  T* data() { return node().data->data(); }
  const T* data() const { return node().data->data(); }
  Map vec() { return Map(data(), numel()); }
  ConstMap vec() const { return ConstMap(data(), numel()); }
  T item() const;
  std::vector<T> to_vector() const;
  TensorT clone() const;   // a copy of the data, no grad, no graph
  TensorT detach() const;  // shares data, no grad, no graph

  bool requires_grad() const { return defined() && node().requires_grad; }
  TensorT& set_requires_grad(bool on);
  bool is_leaf() const { return !node().backward_fn; }
  bool has_grad() const { return defined() && node().grad != nullptr; }
  T* grad_data();                      // allocates a zero gradient on first use
  // For backward closures that set every element of the gradient: the gradient, and in `fresh`
  // whether this call allocated it, uninitialised (then write with =, not +=). Spares zeroing a
  // buffer only to add into it once (and keeps that pass off the main thread).
  T* grad_data_fresh(bool& fresh);
  // Adds g (same number of elements) to the gradient. A non-leaf without a gradient yet takes g's
  // buffer itself (reshape: the same elements under another shape), so nothing is copied: pass a
  // gradient nothing else will touch again (an op's own output gradient, once).
  void accumulate_grad(const TensorT& g);
  Map grad_vec() { return Map(grad_data(), numel()); }
  TensorT grad() const;                // the gradient as a tensor (zeros if none yet)
  void zero_grad() { node().grad.reset(); }

  // For op closures.
  const TensorT& input(std::size_t i) const { return node().inputs[i]; }
  std::size_t num_inputs() const { return node().inputs.size(); }
  void set_backward(std::vector<TensorT> inputs, BackwardFn<T> fn);

  void backward();                     // scalar output: seed 1
  void backward(const TensorT& seed);  // seed with the gradient of some scalar w.r.t. this tensor

  bool same_node(const TensorT& other) const { return node_ == other.node_; }

 private:
  explicit TensorT(std::shared_ptr<Node<T>> n) : node_(std::move(n)) {}
  Node<T>& node() const;
  std::shared_ptr<Node<T>> node_;
  friend struct Node<T>;
};

using Tensor = TensorT<float>;

}  // namespace vlm
