// Greedy generation over any Architecture, with the KV cache (prefill, then decode) or without it
// (a full forward per new token), with HF generate's semantics.
#pragma once

#include <cstdint>
#include <vector>

#include "architectures/architecture.h"

namespace vlm {

// HF generate's greedy semantics: EOS cannot be chosen before min_new_tokens (HF's
// MinNewTokensLengthLogitsProcessor); a row that emits EOS is finished and then gets pad_token_id.
struct GenerateOptions {
  int max_new_tokens = 1;
  int min_new_tokens = 0;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
  bool use_cache = true;
};

// Greedy continuation per row: [B][n], n = max_new_tokens, or fewer when every row has emitted EOS
// (HF generate stops there too).
std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, const GenerateOptions& opt);
// Argmax of the last position of each row of logits [B, T, V], skipping `banned` ids; the first
// maximum wins, as torch.argmax.
std::vector<int64_t> argmax_last(const Tensor& logits, const std::vector<int64_t>& banned = {});
// Plain greedy (no EOS handling): [B][n].
std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, int max_new_tokens,
                                                  bool use_cache);

}  // namespace vlm
