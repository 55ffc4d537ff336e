#include "architectures/generate.h"

#include <algorithm>

namespace vlm {

std::vector<int64_t> argmax_last(const Tensor& logits, const std::vector<int64_t>& banned) {  // [B, T, V] -> [B]
  const int64_t B = logits.dim(0), T = logits.dim(1), V = logits.dim(2);
  std::vector<int64_t> out;
  for (int64_t b = 0; b < B; ++b) {
    const float* row = logits.data() + (b * T + T - 1) * V;
    int64_t best = -1;
    for (int64_t v = 0; v < V; ++v) {
      if (std::find(banned.begin(), banned.end(), v) != banned.end()) continue;
      if (best < 0 || row[v] > row[best]) best = v;
    }
    out.push_back(best);
  }
  return out;
}

std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, const GenerateOptions& opt) {
  NoGradGuard no_grad;
  const int64_t B = in.shape("input_ids")[0];
  std::vector<std::vector<int64_t>> out(static_cast<std::size_t>(B));
  std::vector<bool> finished(static_cast<std::size_t>(B), false);
  // Picks the next token per row from the logits and records it; returns what to feed back.
  auto step = [&](const Tensor& logits, int i) {
    const std::vector<int64_t> banned = i < opt.min_new_tokens ? opt.eos_token_ids : std::vector<int64_t>{};
    std::vector<int64_t> next = argmax_last(logits, banned);
    for (std::size_t b = 0; b < next.size(); ++b) {
      if (finished[b]) next[b] = opt.pad_token_id;
      else if (std::find(opt.eos_token_ids.begin(), opt.eos_token_ids.end(), next[b]) != opt.eos_token_ids.end())
        finished[b] = true;
      out[b].push_back(next[b]);
    }
    return next;
  };
  // HF generate stops once every row has emitted EOS; so does this (rows are then shorter).
  auto all_finished = [&] { return std::all_of(finished.begin(), finished.end(), [](bool f) { return f; }); };
  if (opt.max_new_tokens <= 0) return out;
  if (opt.use_cache) {
    auto [logits, state] = arch.prefill(in);
    for (int i = 0; i < opt.max_new_tokens; ++i) {
      const std::vector<int64_t> next = step(logits, i);
      if (i + 1 < opt.max_new_tokens && !all_finished()) logits = arch.decode(*state, next);
      else break;
    }
  } else {
    Inputs cur = in;
    for (int i = 0; i < opt.max_new_tokens; ++i) {
      const std::vector<int64_t> next = step(arch.forward(cur).logits, i);
      if (i + 1 < opt.max_new_tokens && !all_finished()) cur = arch.append_tokens(cur, next);
      else break;
    }
  }
  return out;
}

std::vector<std::vector<int64_t>> greedy_generate(Architecture& arch, const Inputs& in, int max_new_tokens,
                                                  bool use_cache) {
  GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  opt.use_cache = use_cache;
  return greedy_generate(arch, in, opt);
}

}  // namespace vlm
