// Activations with HF ACT2FN semantics (docs/architectures.md §0), fused with their
// derivatives. The composites (e.g. gelu_tanh from tanh/mul/add) are the test oracles.
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>

#include "lib/ops/ops.h"
#include "lib/ops/unary.h"

namespace vlm {

template <typename T>
TensorT<T> tanh(const TensorT<T>& x) {
  return detail::unary_op(x, [](T v) { return std::tanh(v); }, [](T, T y) { return T(1) - y * y; });
}

template <typename T>
TensorT<T> relu(const TensorT<T>& x) {
  return detail::unary_op(
      x, [](T v) { return v > T(0) ? v : T(0); }, [](T v, T) { return v > T(0) ? T(1) : T(0); });
}

template <typename T>
TensorT<T> relu2(const TensorT<T>& x) {
  return detail::unary_op(
      x, [](T v) { return v > T(0) ? v * v : T(0); }, [](T v, T) { return v > T(0) ? T(2) * v : T(0); });
}

template <typename T>
TensorT<T> gelu(const TensorT<T>& x) {  // on Eigen's vectorised erf and exp
  using Array = typename TensorT<T>::Array;
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  const T inv_sqrt2pi = static_cast<T>(0.39894228040143267794);
  return detail::unary_op_chunks(
      x, [inv_sqrt2](const auto& v, auto& y) { y = T(0.5) * v * (T(1) + (v * inv_sqrt2).erf()); },
      [inv_sqrt2, inv_sqrt2pi](const auto& v, const auto&, const auto& g, auto& dx) {
        const Array cdf = T(0.5) * (T(1) + (v * inv_sqrt2).erf());
        dx += g * (cdf + v * inv_sqrt2pi * (T(-0.5) * v.square()).exp());
      });
}

template <typename T>
TensorT<T> gelu_tanh(const TensorT<T>& x) {
  static const T k = static_cast<T>(0.79788456080286535588);  // sqrt(2/pi)
  static const T c = static_cast<T>(0.044715);
  return detail::unary_op(
      x, [](T v) { return T(0.5) * v * (T(1) + std::tanh(k * (v + c * v * v * v))); },
      [](T v, T) {
        const T th = std::tanh(k * (v + c * v * v * v));
        return T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * k * (T(1) + T(3) * c * v * v);
      });
}

namespace {

// x · σ(a·x) with f' = σ + a·x·σ·(1 − σ) = σ + a·y·(1 − σ): SiLU (a = 1) and quick_gelu (a = 1.702),
// on Eigen's vectorised logistic.
template <typename T>
TensorT<T> x_sigmoid(const TensorT<T>& x, T a) {
  using Array = typename TensorT<T>::Array;
  return detail::unary_op_chunks(
      x, [a](const auto& v, auto& y) { y = v * (a * v).logistic(); },
      [a](const auto& v, const auto& y, const auto& g, auto& dx) {
        const Array s = (a * v).logistic();
        dx += g * (s + a * y * (T(1) - s));
      });
}

}  // namespace

template <typename T>
TensorT<T> quick_gelu(const TensorT<T>& x) {
  return x_sigmoid(x, static_cast<T>(1.702));
}

template <typename T>
TensorT<T> silu(const TensorT<T>& x) {
  return x_sigmoid(x, T(1));
}

#define VLM_INSTANTIATE(T)                          \
  template TensorT<T> tanh(const TensorT<T>&);      \
  template TensorT<T> relu(const TensorT<T>&);      \
  template TensorT<T> relu2(const TensorT<T>&);     \
  template TensorT<T> gelu(const TensorT<T>&);      \
  template TensorT<T> gelu_tanh(const TensorT<T>&); \
  template TensorT<T> quick_gelu(const TensorT<T>&); \
  template TensorT<T> silu(const TensorT<T>&);
VLM_INSTANTIATE(float)
VLM_INSTANTIATE(double)
#undef VLM_INSTANTIATE

}  // namespace vlm
