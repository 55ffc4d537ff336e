// `vlmlab demo`: exercises the whole core end to end until the experiment runner lands. A tiny
// pre-norm decoder (Embedding, DecoderBlocks with GQA + RoPE + SwiGLU, RMSNorm, head) learns to
// reverse digit strings with AdamW + warmup/cosine + clipping; it is then evaluated by greedy
// decoding with the KV cache, saved to safetensors, reloaded and checked, with FLOPs, memory per
// category and timings printed for each phase.
#include "experiments/demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/nn/weights.h"
#include "lib/measure/flops.h"
#include "lib/nn/modules.h"
#include "lib/ops/ops.h"
#include "lib/train/optimizer.h"

namespace vlm {
namespace {

constexpr int64_t kPad = 0, kBos = 1, kSep = 2, kDigit0 = 3, kVocab = 13;

class TinyLm : public Module<float> {
 public:
  TinyLm(int64_t hidden, int layers, Rng& rng) : embed_tokens(kVocab, hidden, rng), norm(hidden, 1e-6) {
    DecoderBlockConfig cfg;
    cfg.attn.hidden_size = hidden;
    cfg.attn.num_heads = 4;
    cfg.attn.num_kv_heads = 2;
    cfg.mlp = GatedMlpConfig{.hidden_size = hidden, .intermediate_size = 2 * hidden};
    for (int i = 0; i < layers; ++i) blocks.push_back(std::make_unique<DecoderBlock<float>>(cfg, rng));
    lm_head.emplace(hidden, kVocab, false, rng);
    head_dim = hidden / 4;
  }
  // ids [B, T] at positions start..start+T-1 -> logits [B, T, V].
  Tensor forward(const std::vector<int64_t>& ids, int64_t B, int64_t T, int64_t start, KvCache<float>* cache) {
    std::vector<int64_t> pos(static_cast<std::size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[static_cast<std::size_t>(t)] = start + t;
    const RopeTables<float> rope = rope_tables_1d<float>(pos, 1, T, head_dim, 10000.0);
    AttnMask mask;
    mask.causal = true;
    Tensor h = embed_tokens.forward(ids, {B, T});
    for (std::size_t i = 0; i < blocks.size(); ++i) h = blocks[i]->forward(h, &rope, mask, cache, static_cast<int>(i));
    return lm_head->forward(norm.forward(h));
  }
  void visit(const std::string& prefix, const ParamVisitor<float>& v) override {
    embed_tokens.visit(prefix + "model.embed_tokens.", v);
    for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i]->visit(prefix + "model.layers." + std::to_string(i) + ".", v);
    norm.visit(prefix + "model.norm.", v);
    lm_head->visit(prefix + "lm_head.", v);
  }

  Embedding<float> embed_tokens;
  std::vector<std::unique_ptr<DecoderBlock<float>>> blocks;
  RMSNorm<float> norm;
  std::optional<Linear<float>> lm_head;
  int64_t head_dim;
};

// BOS d1..dn SEP dn..d1: inputs are all but the last token; targets are the next tokens, with
// every position before the answer ignored.
void make_batch(Rng& rng, int64_t B, int64_t n, std::vector<int64_t>& ids, std::vector<int64_t>& targets) {
  const int64_t T = 2 * n + 1;
  ids.assign(static_cast<std::size_t>(B * T), kPad);
  targets.assign(static_cast<std::size_t>(B * T), -100);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> seq{kBos};
    std::vector<int64_t> digits;
    for (int64_t i = 0; i < n; ++i) digits.push_back(kDigit0 + rng.below(10));
    seq.insert(seq.end(), digits.begin(), digits.end());
    seq.push_back(kSep);
    seq.insert(seq.end(), digits.rbegin(), digits.rend());
    for (int64_t t = 0; t < T; ++t) {
      ids[static_cast<std::size_t>(b * T + t)] = seq[static_cast<std::size_t>(t)];
      if (t >= n) targets[static_cast<std::size_t>(b * T + t)] = seq[static_cast<std::size_t>(t + 1)];
    }
  }
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void print_memory(const char* phase) {
  const MemStats s = memory_stats();
  std::printf("  memory %-8s peak: params %.2f MB, grads %.2f MB, optimizer %.2f MB, activations %.2f MB, "
              "kv_cache %.3f MB; peak RSS %.1f MB\n",
              phase, static_cast<double>(s.peak_of(MemCat::kParameters)) / 1e6,
              static_cast<double>(s.peak_of(MemCat::kGradients)) / 1e6,
              static_cast<double>(s.peak_of(MemCat::kOptimizer)) / 1e6,
              static_cast<double>(s.peak_of(MemCat::kActivations)) / 1e6,
              static_cast<double>(s.peak_of(MemCat::kKvCache)) / 1e6, static_cast<double>(peak_rss_bytes()) / 1e6);
}

// Greedy answer of n tokens for one prompt, with the KV cache.
std::vector<int64_t> generate(TinyLm& m, const std::vector<int64_t>& prompt, int64_t n) {
  NoGradGuard no_grad;
  KvCache<float> cache(static_cast<int>(m.blocks.size()), 1, 2, m.head_dim, m.head_dim);
  const auto P = static_cast<int64_t>(prompt.size());
  Tensor logits = m.forward(prompt, 1, P, 0, &cache);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const float* last = logits.data() + (logits.dim(1) - 1) * kVocab;
    const int64_t next = std::max_element(last, last + kVocab) - last;
    out.push_back(next);
    if (i + 1 < n) logits = m.forward({next}, 1, 1, P + i, &cache);
  }
  return out;
}

}  // namespace

int run_demo(const DemoOptions& opt) {
  set_num_threads(opt.threads);
  const int64_t n = 5, T = 2 * n + 1;
  std::printf("vlmlab demo: a %d-layer decoder (hidden %lld, GQA 4/2 heads, RoPE, SwiGLU) learns to reverse %lld digits\n",
              opt.layers, static_cast<long long>(opt.hidden), static_cast<long long>(n));
  std::printf("  threads %d, steps %d, batch %d\n", opt.threads, opt.steps, opt.batch);
  Rng init(opt.seed);
  TinyLm model(opt.hidden, opt.layers, init);
  std::printf("  parameters: %lld\n", static_cast<long long>(count_parameters(model)));

  AdamW<float> adam(named_parameters(model), decay_matrices_only<float>, AdamWConfig{.lr = 3e-3, .weight_decay = 0.01});
  const LrSchedule sched{.kind = LrScheduleKind::kCosine, .lr = 3e-3, .min_lr = 3e-4, .warmup_steps = opt.steps / 10,
                         .total_steps = opt.steps};
  Rng data(opt.seed + 1);
  std::vector<int64_t> ids, targets;
  reset_peak_memory();
  const auto t_train = std::chrono::steady_clock::now();
  FlopScope train_flops;
  double loss_v = 0;
  for (int step = 0; step < opt.steps; ++step) {
    make_batch(data, opt.batch, n, ids, targets);
    Tensor logits = model.forward(ids, opt.batch, T, 0, nullptr);
    Tensor loss = cross_entropy(reshape(logits, {-1, kVocab}), targets);
    loss.backward();
    const GradNormResult gn = clip_grad_norm(adam.tensors(), 1.0);
    if (!gn.finite) {
      std::fprintf(stderr, "demo: gradients became NaN/inf at step %d; stopping\n", step);
      return 1;
    }
    adam.step(sched.lr_at(step));
    adam.zero_grad();
    loss_v = loss.item();
    if (step % std::max(1, opt.steps / 10) == 0 || step + 1 == opt.steps)
      std::printf("  step %4d  loss %.4f  lr %.2e  grad_norm %.3f\n", step, loss_v, sched.lr_at(step), gn.total_norm);
  }
  const double train_ms = ms_since(t_train);
  std::printf("  training: %.1f ms/step, %.2f GFLOP/step, %.1f GFLOP/s\n", train_ms / opt.steps,
              static_cast<double>(train_flops.flops()) / opt.steps / 1e9,
              static_cast<double>(train_flops.flops()) / train_ms / 1e6);
  print_memory("train");

  // Evaluation on fresh strings (another seed stream), greedy with the KV cache.
  reset_peak_memory();
  Rng eval_rng(opt.seed + 1000);
  int correct = 0;
  const int n_eval = 200;
  const auto t_eval = std::chrono::steady_clock::now();
  FlopScope eval_flops;
  for (int i = 0; i < n_eval; ++i) {
    make_batch(eval_rng, 1, n, ids, targets);
    const std::vector<int64_t> prompt(ids.begin(), ids.begin() + n + 2);
    const std::vector<int64_t> answer = generate(model, prompt, n);
    bool ok = true;
    for (int64_t k = 0; k < n; ++k) ok = ok && answer[static_cast<std::size_t>(k)] == prompt[static_cast<std::size_t>(n - k)];
    correct += ok;
  }
  const double eval_ms = ms_since(t_eval);
  std::printf("  eval: exact match %d/%d = %.1f%% (chance %.0e), %.3f ms per generated token, %.1f kFLOP/token\n",
              correct, n_eval, 100.0 * correct / n_eval, std::pow(0.1, static_cast<double>(n)),
              eval_ms / (n_eval * n), static_cast<double>(eval_flops.flops()) / (n_eval * n) / 1e3);
  print_memory("decode");

  // Save, reload into a differently initialised model, and compare logits.
  std::filesystem::create_directories(opt.out_dir);
  const std::string path = opt.out_dir + "/model.safetensors";
  io::save_module(path, model, "", {{"format", "pt"}, {"vlmlab", "demo"}});
  Rng other(opt.seed + 77);
  TinyLm reloaded(opt.hidden, opt.layers, other);
  io::load_module(path, reloaded);
  NoGradGuard no_grad;
  make_batch(eval_rng, 4, n, ids, targets);
  const Tensor a = model.forward(ids, 4, T, 0, nullptr), b = reloaded.forward(ids, 4, T, 0, nullptr);
  const float diff = (a.vec() - b.vec()).abs().maxCoeff();
  std::printf("  saved %s (%zu tensors); reloaded logits max |diff| = %g\n", path.c_str(),
              named_parameters(model).size(), static_cast<double>(diff));
  if (diff != 0.0f) return 1;
  const bool learned = correct >= n_eval * 9 / 10;
  std::printf("demo %s\n", learned ? "OK" : "FAILED: the model did not learn the task");
  return learned ? 0 : 1;
}

}  // namespace vlm
