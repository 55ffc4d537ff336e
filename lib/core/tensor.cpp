#include "lib/core/tensor.h"

#include <cstring>
#include <sstream>
#include <unordered_set>

#include "lib/core/parallel.h"
#include "lib/core/random.h"

namespace vlm {
namespace {
thread_local bool t_grad_enabled = true;
}

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    VLM_CHECK(d >= 0, "negative dimension in shape " << shape_str(shape));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

template <typename T>
Buffer<T>::Buffer(int64_t n, MemCat cat, bool zero)
    : data_(static_cast<T*>(mem_alloc(static_cast<std::size_t>(n) * sizeof(T), cat))),
      n_(n),
      cat_(cat) {
  // Zeroing a large gradient is a pass over memory: split it over the threads like any elementwise op.
  if (zero && n > 0)
    parallel_for(n, int64_t{1} << 16, [this](int64_t b, int64_t e) {
      std::memset(data_ + b, 0, static_cast<std::size_t>(e - b) * sizeof(T));
    });
}

template <typename T>
Buffer<T>::~Buffer() {
  mem_free(data_, static_cast<std::size_t>(n_) * sizeof(T), cat_);
}

template <typename T>
Node<T>::~Node() {
  std::vector<std::shared_ptr<Node<T>>> stack;
  auto take = [&stack](std::vector<TensorT<T>>& ins) {
    for (auto& t : ins) {
      if (t.node_) stack.push_back(std::move(t.node_));
    }
    ins.clear();
  };
  take(inputs);
  while (!stack.empty()) {
    std::shared_ptr<Node<T>> n = std::move(stack.back());
    stack.pop_back();
    if (n.use_count() == 1) take(n->inputs);  // n dies at the end of this iteration, childless
  }
}

template <typename T>
Node<T>& TensorT<T>::node() const {
  VLM_CHECK(node_ != nullptr, "use of an undefined tensor");
  return *node_;
}

template <typename T>
TensorT<T> TensorT<T>::empty(const Shape& shape) {
  auto n = std::make_shared<Node<T>>();
  n->shape = shape;
  n->data = std::make_shared<Buffer<T>>(numel_of(shape), current_mem_cat(), false);
  return TensorT(std::move(n));
}

template <typename T>
TensorT<T> TensorT<T>::zeros(const Shape& shape) {
  auto n = std::make_shared<Node<T>>();
  n->shape = shape;
  n->data = std::make_shared<Buffer<T>>(numel_of(shape), current_mem_cat(), true);
  return TensorT(std::move(n));
}

template <typename T>
TensorT<T> TensorT<T>::full(const Shape& shape, T value) {
  TensorT t = empty(shape);
  t.vec().setConstant(value);
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::from(const Shape& shape, const std::vector<T>& values) {
  VLM_CHECK(numel_of(shape) == static_cast<int64_t>(values.size()),
            "shape " << shape_str(shape) << " needs " << numel_of(shape) << " values, got "
                     << values.size());
  TensorT t = empty(shape);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(T));
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::randn(const Shape& shape, Rng& rng, double stddev) {
  TensorT t = empty(shape);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(rng.normal() * stddev);
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::uniform(const Shape& shape, Rng& rng, double lo, double hi) {
  TensorT t = empty(shape);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::view_of(const TensorT& storage_of, const Shape& shape) {
  VLM_CHECK(numel_of(shape) == storage_of.numel(), "cannot view " << storage_of.numel()
                                                                   << " elements as shape "
                                                                   << shape_str(shape));
  auto n = std::make_shared<Node<T>>();
  n->shape = shape;
  n->data = storage_of.node().data;
  return TensorT(std::move(n));
}

template <typename T>
int64_t TensorT<T>::dim(int i) const {
  const int nd = ndim();
  const int j = i < 0 ? i + nd : i;
  VLM_CHECK(j >= 0 && j < nd, "dim " << i << " out of range for shape " << shape_str(shape()));
  return shape()[static_cast<std::size_t>(j)];
}

template <typename T>
T TensorT<T>::item() const {
  VLM_CHECK(numel() == 1, "item() on a tensor of shape " << shape_str(shape()));
  return data()[0];
}

template <typename T>
std::vector<T> TensorT<T>::to_vector() const {
  return std::vector<T>(data(), data() + numel());
}

template <typename T>
TensorT<T> TensorT<T>::clone() const {
  TensorT t = empty(shape());
  if (numel() > 0) std::memcpy(t.data(), data(), static_cast<std::size_t>(numel()) * sizeof(T));
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::detach() const {
  return view_of(*this, shape());
}

template <typename T>
TensorT<T>& TensorT<T>::set_requires_grad(bool on) {
  VLM_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor");
  node().requires_grad = on;
  return *this;
}

template <typename T>
T* TensorT<T>::grad_data() {
  Node<T>& n = node();
  if (!n.grad) {
    // A leaf's gradient is a parameter gradient; an intermediate one is activation memory.
    n.grad = std::make_shared<Buffer<T>>(n.data->size(),
                                         n.backward_fn ? MemCat::kActivations : MemCat::kGradients,
                                         true);
  }
  return n.grad->data();
}

template <typename T>
T* TensorT<T>::grad_data_fresh(bool& fresh) {
  Node<T>& n = node();
  fresh = !n.grad;
  if (fresh) {
    n.grad = std::make_shared<Buffer<T>>(n.data->size(),
                                         n.backward_fn ? MemCat::kActivations : MemCat::kGradients,
                                         false);
  }
  return n.grad->data();
}

template <typename T>
void TensorT<T>::accumulate_grad(const TensorT& g) {
  Node<T>& n = node();
  const Node<T>& gn = g.node();
  VLM_CHECK(gn.data->size() == n.data->size(), "accumulate_grad: " << gn.data->size() << " elements into a gradient of "
                                                                    << n.data->size());
  if (!n.grad && n.backward_fn) {  // an activation gradient like g's own buffer: share it
    n.grad = gn.data;
    return;
  }
  bool fresh = false;
  T* d = grad_data_fresh(fresh);
  const T* s = gn.data->data();
  parallel_for(n.data->size(), int64_t{1} << 14, [&](int64_t b, int64_t e) {
    if (fresh) {
      std::memcpy(d + b, s + b, static_cast<std::size_t>(e - b) * sizeof(T));
    } else {
      for (int64_t i = b; i < e; ++i) d[i] += s[i];
    }
  });
}

template <typename T>
TensorT<T> TensorT<T>::grad() const {
  const Node<T>& n = node();
  if (!n.grad) return zeros(n.shape);
  auto g = std::make_shared<Node<T>>();
  g->shape = n.shape;
  g->data = n.grad;
  return TensorT(std::move(g));
}

template <typename T>
void TensorT<T>::set_backward(std::vector<TensorT> inputs, BackwardFn<T> fn) {
  if (!t_grad_enabled) return;
  bool any = false;
  for (const auto& in : inputs) any = any || in.requires_grad();
  if (!any) return;
  Node<T>& n = node();
  n.requires_grad = true;
  n.inputs = std::move(inputs);
  n.backward_fn = std::move(fn);
}

template <typename T>
void TensorT<T>::backward() {
  VLM_CHECK(numel() == 1, "backward() without a seed needs a scalar, got shape "
                              << shape_str(shape()));
  backward(full(shape(), T(1)));
}

template <typename T>
void TensorT<T>::backward(const TensorT& seed) {
  VLM_CHECK(requires_grad(), "backward() on a tensor that does not require grad");
  VLM_CHECK(seed.shape() == shape(), "backward seed shape " << shape_str(seed.shape())
                                                            << " != " << shape_str(shape()));
  // Topological order of the nodes that have a closure (iterative DFS, post-order).
  std::vector<std::shared_ptr<Node<T>>> order;
  std::unordered_set<const Node<T>*> seen{node_.get()};
  std::vector<std::pair<std::shared_ptr<Node<T>>, std::size_t>> stack{{node_, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      const std::shared_ptr<Node<T>>& child = n->inputs[next++].node_;
      if (child && child->backward_fn && seen.insert(child.get()).second) {
        stack.emplace_back(child, 0);
      }
      continue;
    }
    if (n->backward_fn) order.push_back(std::move(n));
    stack.pop_back();
  }

  {
    NoGradGuard no_grad;  // closures compute gradients; they must not record a tape
    bool fresh = false;
    T* g0 = grad_data_fresh(fresh);
    const T* s0 = seed.data();
    const int64_t count = numel();
    for (int64_t i = 0; i < count; ++i) g0[i] = (fresh ? T(0) : g0[i]) + s0[i];
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      std::shared_ptr<Node<T>> n = std::move(*it);
      if (n->grad && n->backward_fn) n->backward_fn(TensorT(n));
      n->backward_fn = nullptr;
      n->inputs.clear();
      n->grad.reset();
    }
  }
}

template class Buffer<float>;
template class Buffer<double>;
template struct Node<float>;
template struct Node<double>;
template class TensorT<float>;
template class TensorT<double>;

}  // namespace vlm
