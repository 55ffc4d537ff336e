// Scaled dot-product attention and the KV cache for decoding.
// Layout: q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv], out [B, Tq, Hq, Dv]: the layout a
// linear projection produces, so heads are read with a leading dimension and never permuted.
// GQA: query head h reads kv head h / (Hq / Hkv) (HF repeat_kv), never h % Hkv.
// A query row whose every key is masked yields zeros (and zero gradients), never NaN.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/core/tensor.h"

namespace vlm {

// Which keys each query may see; the conditions combine with AND. Unset parts allow everything.
struct AttnMask {
  // Key j is visible to query i iff j <= i + (Tk - Tq): the queries are the last Tq positions.
  bool causal = false;
  // [B, Tk], nonzero = a real key (padding mask). Empty = every key is real.
  std::vector<uint8_t> key_valid;
  // [allowed_batch, Tq, Tk], nonzero = allowed; allowed_batch is 1 (shared) or B. For block-
  // diagonal attention (per image / per frame) and per-token image masks. Empty = all allowed.
  std::vector<uint8_t> allowed;
  int64_t allowed_batch = 1;
  // Block-diagonal attention (per image / per frame): query i sees key j only when both lie in the
  // same one of these consecutive segments, whose lengths sum to Tq == Tk. Empty = one segment. The
  // kernel computes only the diagonal blocks (a dense `allowed` mask would cost the whole T×T).
  std::vector<int64_t> segments;
};

// Block-diagonal mask from segment lengths (e.g. tokens per image): visible iff same segment.
AttnMask block_diagonal_mask(const std::vector<int64_t>& segment_lengths);

template <typename T>
TensorT<T> attention(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v, const AttnMask& mask,
                     double scale);

// Per-layer key/value cache for decoding (inference only: no gradients flow through it). Memory is
// counted as kv_cache. Capacity grows as needed.
template <typename T>
class KvCache {
 public:
  KvCache(int num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim, int64_t v_head_dim,
          int64_t initial_capacity = 64);
  // Move-only: a copy would share the buffers and silently corrupt both caches.
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&&) noexcept = default;
  KvCache& operator=(KvCache&&) noexcept = default;
  int64_t length(int layer = 0) const;  // positions cached in `layer`
  // Appends k_new/v_new [B, Tn, Hkv, D|Dv] to `layer`, then attends q [B, Tn, Hq, D] over every cached
  // key (mask sized for Tk = length after the append).
  TensorT<T> attend(int layer, const TensorT<T>& q, const TensorT<T>& k_new, const TensorT<T>& v_new,
                    const AttnMask& mask, double scale);
  void clear();

 private:
  struct Layer {
    TensorT<T> k, v;  // [B, capacity, Hkv, D|Dv]
    int64_t len = 0;
  };
  void reserve(Layer& l, int64_t needed);
  std::vector<Layer> layers_;
  int64_t batch_, kv_heads_, head_dim_, v_head_dim_, capacity_;
};

}  // namespace vlm
