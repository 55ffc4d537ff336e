// Every op of the core, one line each. Each has its forward and backward side by side in its .cpp
// and is instantiated for float (models) and double (gradient checks).
// Shape letters: B batch, T sequence, H heads, D head dim, C channels, N rows, V vocabulary.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/core/tensor.h"

namespace vlm {

template <typename T>
using Tensors = std::vector<TensorT<T>>;

// ---- elementwise (elementwise.cpp); binary ops broadcast numpy-style ----
template <typename T> TensorT<T> add(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> sub(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> mul(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> div(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> scale(const TensorT<T>& x, double s);       // x * s
template <typename T> TensorT<T> add_scalar(const TensorT<T>& x, double s);  // x + s
template <typename T> TensorT<T> neg(const TensorT<T>& x);
template <typename T> TensorT<T> exp(const TensorT<T>& x);
template <typename T> TensorT<T> log(const TensorT<T>& x);
template <typename T> TensorT<T> sqrt(const TensorT<T>& x);
template <typename T> TensorT<T> rsqrt(const TensorT<T>& x);
template <typename T> TensorT<T> square(const TensorT<T>& x);
template <typename T> TensorT<T> sigmoid(const TensorT<T>& x);
template <typename T> TensorT<T> erf(const TensorT<T>& x);

// ---- activations (activation.cpp), HF ACT2FN semantics ----
template <typename T> TensorT<T> tanh(const TensorT<T>& x);
template <typename T> TensorT<T> relu(const TensorT<T>& x);
template <typename T> TensorT<T> relu2(const TensorT<T>& x);       // relu(x)^2
template <typename T> TensorT<T> gelu(const TensorT<T>& x);        // exact, erf
template <typename T> TensorT<T> gelu_tanh(const TensorT<T>& x);   // tanh approximation
template <typename T> TensorT<T> quick_gelu(const TensorT<T>& x);  // x * sigmoid(1.702 x)
template <typename T> TensorT<T> silu(const TensorT<T>& x);        // x * sigmoid(x)

// ---- reductions (reduce.cpp); axis may be negative ----
template <typename T> TensorT<T> sum(const TensorT<T>& x, int axis, bool keepdim = false);
template <typename T> TensorT<T> mean(const TensorT<T>& x, int axis, bool keepdim = false);
template <typename T> TensorT<T> max(const TensorT<T>& x, int axis, bool keepdim = false);
template <typename T> TensorT<T> sum_all(const TensorT<T>& x);  // -> shape []

// ---- movement (movement.cpp) ----
template <typename T> TensorT<T> reshape(const TensorT<T>& x, const Shape& shape);  // shares data; one -1 allowed
template <typename T> TensorT<T> permute(const TensorT<T>& x, const std::vector<int>& dims);
template <typename T> TensorT<T> transpose(const TensorT<T>& x, int a, int b);
template <typename T> TensorT<T> slice(const TensorT<T>& x, int axis, int64_t start, int64_t end);
template <typename T> TensorT<T> concat(const Tensors<T>& xs, int axis);
template <typename T> TensorT<T> broadcast_to(const TensorT<T>& x, const Shape& shape);

// ---- indexing (index.cpp) ----
// Rows of table [N, C] at ids -> [ids.size(), C] (embedding lookup).
template <typename T> TensorT<T> gather_rows(const TensorT<T>& table, const std::vector<int64_t>& ids);
// HF masked_scatter over rows: dst [N, C]; the rows where row_mask != 0, in order, are replaced by
// consecutive rows of src [M, C]; M must equal the number of set rows.
template <typename T>
TensorT<T> scatter_rows(const TensorT<T>& dst, const std::vector<uint8_t>& row_mask, const TensorT<T>& src);

// ---- matrix products (matmul.cpp), cblas_{s,d}gemm ----
// a [..., M, K] (or [..., K, M] if trans_a) times b [..., K, N] (or [..., N, K] if trans_b); batch
// dims broadcast (b may be 2-D and shared). Transposes are passed to BLAS, never copied.
template <typename T>
TensorT<T> matmul(const TensorT<T>& a, const TensorT<T>& b, bool trans_a = false, bool trans_b = false);
// x [..., in] · weightᵀ + bias: weight [out, in] (HF layout), bias [out] or undefined.
template <typename T> TensorT<T> linear(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias);

// ---- softmax family (softmax.cpp), over the last axis ----
template <typename T> TensorT<T> softmax(const TensorT<T>& x);
template <typename T> TensorT<T> log_softmax(const TensorT<T>& x);
// Mean over the rows whose target != ignore_index of -log softmax(logits)[target];
// logits [N, V]. With every row ignored the loss is 0 (and so are the gradients).
template <typename T>
TensorT<T> cross_entropy(const TensorT<T>& logits, const std::vector<int64_t>& targets, int64_t ignore_index = -100);

// ---- normalisation (norm.cpp), over the last axis ----
template <typename T>  // weight/bias [C] or undefined; biased variance
TensorT<T> layer_norm(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, double eps);
template <typename T>  // x * rsqrt(mean(x^2) + eps) * weight
TensorT<T> rms_norm(const TensorT<T>& x, const TensorT<T>& weight, double eps);

}  // namespace vlm
