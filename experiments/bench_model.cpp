#include "experiments/bench_model.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "architectures/generate.h"
#include "architectures/pretrained.h"
#include "lib/core/cpu.h"
#include "lib/core/parallel.h"
#include "lib/core/random.h"
#include "lib/data/task.h"
#include "lib/measure/flops.h"
#include "lib/ops/gemm.h"
#include "lib/ops/gemm_kernels.h"
#include "lib/train/optimizer.h"

namespace vlm::exp {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// labels [B, T]: at position t the id the logits there predict (the next token), -100 where the
// loss ignores it; with Vlm::loss's weighting (each sample's mean, then the mean over samples).
void add_labels(const Vlm::TrainBatch& b, std::map<std::string, io::RawTensor>& out) {
  const Shape s = b.inputs.shape("input_ids");
  const int64_t B = s[0], T = s[1];
  std::vector<int64_t> labels(static_cast<std::size_t>(B * T), -100);
  for (int64_t r = 0; r < B; ++r) {
    const auto& t = b.targets[static_cast<std::size_t>(r)];
    const auto n = static_cast<int64_t>(t.size());
    for (int64_t k = 0; k < n; ++k) labels[static_cast<std::size_t>(r * T + T - n - 1 + k)] = t[static_cast<std::size_t>(k)];
  }
  out["labels"] = io::raw_i64({B, T}, labels);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

nlohmann::json timings(const std::vector<double>& ms, int64_t flops) {
  return {{"ms", ms}, {"flops", flops}};
}

// Calls step() --warmup times untimed, then --repeats times timed: each timed call's milliseconds
// and the FLOPs one call counts.
template <class F>
nlohmann::json time_repeats(const BenchModelOptions& o, F&& step) {
  std::vector<double> ms;
  int64_t flops = 0;
  for (int rep = -o.warmup; rep < o.repeats; ++rep) {
    const FlopScope f;
    const auto t0 = Clock::now();
    step();
    if (rep >= 0) ms.push_back(ms_since(t0));
    flops = f.flops();
  }
  return timings(ms, flops);
}

// A training step's matrix products alone: the gemm() calls of one step (forward, loss, backward;
// AdamW has none), recorded, then replayed in order on operands of their own, as the step's products
// read tensors other ops wrote, at the same thread count and grad mode. Their time is what the step
// would take if everything else in it were free: the floor that GEMMs set under its time.
nlohmann::json time_train_gemms(Vlm& vlm, const Vlm::TrainBatch& batch, const BenchModelOptions& o) {
  zero_grad(vlm.model());
  std::vector<GemmCall> calls;
  {
    const GemmRecorder rec;
    vlm.loss(batch).backward();
    calls = rec.calls();
  }
  zero_grad(vlm.model());
  std::vector<Tensor> a, b, c;
  for (const GemmCall& g : calls) {
    a.push_back(Tensor::full({g.M * g.K}, 0.01f));
    b.push_back(Tensor::full({g.K * g.N}, 0.01f));
    c.push_back(Tensor::zeros({g.M * g.N}));
  }
  nlohmann::json out = time_repeats(o, [&] {
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const GemmCall& g = calls[i];
      std::optional<NoGradGuard> no_grad;
      if (!g.grad) no_grad.emplace();
      gemm<float>(g.trans_a, g.trans_b, g.M, g.N, g.K, 1.0f, a[i].data(), g.trans_a ? g.M : g.K, b[i].data(),
                  g.trans_b ? g.K : g.N, g.accumulate ? 1.0f : 0.0f, c[i].data(), g.N);
    }
  });
  out["calls"] = calls.size();
  return out;
}

}  // namespace

std::vector<data::Sample> bench_train_samples(const data::Task& task, int batch) {
  std::vector<data::Sample> out;
  for (int i = 0; i < batch; ++i) out.push_back(task.sample(data::Split::kTrain, mix64(static_cast<uint64_t>(i))));
  return out;
}

VlmSpec bench_model_spec(const std::string& family, const std::string& size) {
  VlmSpec spec;
  spec.family = family;
  int64_t width = 0;
  if (size == "small") width = 64;
  else if (size == "large") width = 256;
  else throw ConfigError("bench-model: --size must be small or large, got \"" + size + "\"");
  // experiments/quickstart.toml's [model.*] (and its qwen2vl variant's merge size), at `width`.
  spec.sizes.text.hidden_size = spec.sizes.vision.hidden_size = width;
  spec.sizes.text.num_hidden_layers = spec.sizes.vision.num_hidden_layers = 2;
  spec.sizes.text.num_attention_heads = spec.sizes.vision.num_attention_heads = 4;
  spec.sizes.vision.patch_size = 15;
  spec.sizes.vision.image_size = 75;
  if (family == "qwen2vl") spec.family_keys = {{"spatial_merge_size", 1}};
  if (family == "flamingo") spec.family_keys = {{"resampler_n_latents", 8}};
  return spec;
}

int run_bench_model(const BenchModelOptions& o) {
  VLM_CHECK(o.threads >= 1 && o.batch >= 1 && o.repeats >= 1 && o.warmup >= 0 && o.decode_tokens >= 1,
            "bench-model: --threads, --batch, --repeats and --decode-tokens must be >= 1, --warmup >= 0");
  const std::vector<std::string> what = split_list(o.time);
  for (const std::string& w : what)
    if (w != "train" && w != "train_gemms" && w != "prefill" && w != "decode")
      throw ConfigError("bench-model: --time takes train, train_gemms, prefill, decode (comma separated), got \"" +
                        w + "\"");
  set_num_threads(o.threads);

  const auto task = data::make_task("sort_of_clevr", {});
  Vlm vlm(bench_model_spec(o.family, o.size), *task);
  const std::vector<data::Sample> samples = bench_train_samples(*task, o.batch);
  const Vlm::TrainBatch batch = vlm.train_batch(samples);
  const data::Sample eval0 = task->sample(data::Split::kTest, 0);
  const Inputs prompt = vlm.processor().make_inputs({vlm.prompt(eval0)});

  nlohmann::json out = {{"family", o.family}, {"size", o.size}, {"threads", o.threads}, {"batch", o.batch},
                        {"params", vlm.param_counts().total()},
                        // The float GEMM kernel (lib/ops/gemm_kernels.h) and the CPU it was chosen for.
                        {"gemm", detail::gemm_kernel_name(detail::gemm_kernel())}, {"cpu", cpu_summary()},
                        {"train_tokens", o.batch * batch.inputs.shape("input_ids")[1]},
                        {"prefill_tokens", prompt.shape("input_ids")[1]}};

  if (!o.export_dir.empty()) {
    NoGradGuard no_grad;
    const std::string& dir = o.export_dir;
    save_pretrained(vlm.model(), dir);
    // Everything below comes from the model read back from the folder, and must equal the original.
    const std::unique_ptr<Architecture> loaded = load_pretrained(dir);
    const ForwardOutput fwd = loaded->forward(batch.inputs);
    const Tensor original = vlm.model().forward(batch.inputs).logits;
    VLM_CHECK(original.to_vector() == fwd.logits.to_vector(),
              "bench-model: the model read back from " << dir << " gives other logits than the one written");

    std::map<std::string, io::RawTensor> io_t = batch.inputs.to_safetensors().tensors;
    const std::vector<float> logits = fwd.logits.to_vector();
    io_t["logits"] = io::raw_f32(fwd.logits.shape(), logits);
    if (!fwd.position_ids.empty()) io_t["position_ids"] = io::raw_i64(fwd.position_shape, fwd.position_ids);
    add_labels(batch, io_t);
    {
      NoGradGuard none;
      const float loss = vlm.loss(batch).item();
      io_t["loss"] = io::raw_f32({}, std::span<const float>(&loss, 1));
    }
    // `generated` as the parity fixtures hold it (HF generate, min = max = 6 new tokens), so that
    // `vlmlab parity DIR` checks the export.
    GenerateOptions g;
    g.max_new_tokens = g.min_new_tokens = 6;
    g.eos_token_ids =
        io::HfConfig(generation_config(loaded->config()), "generation config").get_int_list("eos_token_id", {});
    std::vector<int64_t> gen;
    for (const auto& row : greedy_generate(*loaded, batch.inputs, g)) gen.insert(gen.end(), row.begin(), row.end());
    io_t["generated"] = io::raw_i64({o.batch, 6}, gen);
    io::write_safetensors(dir + "/io.safetensors", io_t, {{"family", o.family}, {"size", o.size}});

    // The batch-1 prompt of the prefill and decode timings, its logits, and the greedy tokens the
    // cached decode makes from it (plain argmax, EOS allowed).
    std::map<std::string, io::RawTensor> pf = prompt.to_safetensors().tensors;
    const ForwardOutput pfwd = loaded->forward(prompt);
    const std::vector<float> plogits = pfwd.logits.to_vector();
    pf["logits"] = io::raw_f32(pfwd.logits.shape(), plogits);
    if (!pfwd.position_ids.empty()) pf["position_ids"] = io::raw_i64(pfwd.position_shape, pfwd.position_ids);
    auto [first, state] = loaded->prefill(prompt);
    std::vector<int64_t> decoded{argmax_last(first)[0]};
    for (int k = 1; k < o.decode_tokens; ++k) decoded.push_back(argmax_last(loaded->decode(*state, {decoded.back()}))[0]);
    pf["decoded"] = io::raw_i64({1, o.decode_tokens}, decoded);
    io::write_safetensors(dir + "/prefill.safetensors", pf, {{"family", o.family}, {"size", o.size}});
    out["export"] = dir;
  }
  if (o.trace_steps > 0) {
    VLM_CHECK(!o.export_dir.empty(), "bench-model: --trace-steps needs --export (the steps start from the exported weights)");
    AdamW<float> adam(named_parameters(vlm.model()), decay_matrices_only<float>,
                      AdamWConfig{.lr = 2e-3, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = 0.01});
    std::vector<float> losses;
    for (int s = 0; s < o.trace_steps; ++s) {
      Tensor loss = vlm.loss(batch);
      losses.push_back(loss.item());
      loss.backward();
      clip_grad_norm(adam.tensors(), 1.0);
      adam.step(2e-3);
      adam.zero_grad();
    }
    io::write_safetensors(o.export_dir + "/trace.safetensors",
                          {{"loss", io::raw_f32({o.trace_steps}, losses)}}, {{"family", o.family}});
    out["loss_trace"] = losses;
  }

  for (const std::string& w : what) {
    if (w == "train_gemms") {
      out[w] = time_train_gemms(vlm, batch, o);
      continue;
    }
    if (w == "train") {
      Architecture& m = vlm.model();
      AdamW<float> adam(named_parameters(m), decay_matrices_only<float>, AdamWConfig{.lr = 2e-3, .weight_decay = 0.01});
      out[w] = time_repeats(o, [&] {
        Tensor loss = vlm.loss(batch);
        loss.backward();
        adam.step();
        adam.zero_grad();
      });
      // The step's work with every position's logits (as HF, and torch_reference.py, compute them).
      const FlopScope f;
      vlm.loss(batch, true).backward();
      zero_grad(m);
      out[w]["flops_full"] = f.flops();
      continue;
    }
    NoGradGuard no_grad;
    if (w == "prefill") {
      out[w] = time_repeats(o, [&] { (void)vlm.model().prefill(prompt); });
      continue;
    }
    // decode: per token, after an untimed prefill
    std::vector<double> ms;
    int64_t flops = 0;
    for (int rep = -o.warmup; rep < o.repeats; ++rep) {
      auto [logits, state] = vlm.model().prefill(prompt);
      int64_t next = argmax_last(logits)[0];
      const FlopScope f;
      const auto t0 = Clock::now();
      for (int k = 0; k < o.decode_tokens; ++k) next = argmax_last(vlm.model().decode(*state, {next}))[0];
      if (rep >= 0) ms.push_back(ms_since(t0) / o.decode_tokens);
      flops = f.flops() / o.decode_tokens;
    }
    out[w] = timings(ms, flops);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace vlm::exp
