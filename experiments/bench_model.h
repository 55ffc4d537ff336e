// `vlmlab bench-model`: one family at a named size (the quickstart's or 4x its width) on
// Sort-of-CLEVR samples, exported for an outside reference (bench/torch_reference.py) and timed the
// way that reference times itself: a training step (forward, loss, backward, AdamW) at the training
// batch, prefill at batch 1, and greedy decode per token with the KV cache at batch 1.
#pragma once

#include <string>
#include <vector>

#include "training/vlm.h"

namespace vlm::exp {

struct BenchModelOptions {
  std::string family = "llava";
  std::string size = "small";   // small: experiments/quickstart.toml's sizes; large: 4x the width
  int threads = 1;
  int batch = 32;               // the training batch (the quickstart's)
  std::string export_dir;       // write config.json, model.safetensors, io.safetensors, prefill.safetensors
  std::string time;             // comma list of train, prefill, decode ("" = none)
  int warmup = 2, repeats = 10;
  int decode_tokens = 16;       // tokens per decode repeat
  // With export_dir: after the export, this many training steps on the exported batch (Vlm::loss,
  // backward, torch's clip_grad_norm_ at 1.0, AdamW at lr 2e-3 with decay 0.01 on matrices only:
  // the pieces train() uses), their losses written to DIR/trace.safetensors ("loss", [N]) for a
  // PyTorch replay of the same steps (tests/experiments/test_loss_trace.py).
  int trace_steps = 0;
};

// The model spec bench-model builds: `size` is "small" or "large" (else a ConfigError); each family
// with its quickstart variant's keys.
VlmSpec bench_model_spec(const std::string& family, const std::string& size);
// The samples of a bench training step: train samples drawn as train() draws its first step's.
std::vector<data::Sample> bench_train_samples(const data::Task& task, int batch);

// Runs what `o` asks; prints one JSON object on stdout (sizes, FLOPs, and the timings in ms).
int run_bench_model(const BenchModelOptions& o);

}  // namespace vlm::exp
