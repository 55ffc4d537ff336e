#include "experiments/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "experiments/results.h"
#include "lib/core/memory.h"
#include "lib/core/parallel.h"
#include "lib/measure/flops.h"
#include "lib/measure/phase.h"

namespace vlm::exp {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The sample's images scaled (nearest neighbour) to side x side: the same scene at another
// resolution, so cost can be read against image size.
data::Sample at_resolution(data::Sample s, int64_t side) {
  for (data::Image& im : s.images) {
    data::Image out(side, side);
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x) out.set(y, x, im.at(y * im.height / side, x * im.width / side));
    im = std::move(out);
  }
  return s;
}

MemoryRow memory_row(const std::string& phase) {
  const MemStats m = memory_stats();
  return MemoryRow{.phase = phase,
                   .params = m.peak_of(MemCat::kParameters),
                   .grads = m.peak_of(MemCat::kGradients),
                   .optimizer = m.peak_of(MemCat::kOptimizer),
                   .activations = m.peak_of(MemCat::kActivations),
                   .kv_cache = m.peak_of(MemCat::kKvCache),
                   .peak = m.peak_total,
                   .peak_rss = peak_rss_bytes()};
}

bool glob_match(const std::string& pattern, const std::string& s) {
  if (pattern.find('*') == std::string::npos) return s.find(pattern) != std::string::npos;
  // '*' matches any run of characters; the rest literally.
  std::size_t p = 0, i = 0, star = std::string::npos, mark = 0;
  while (i < s.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = i;
    } else if (p < pattern.size() && pattern[p] == s[i]) {
      ++p;
      ++i;
    } else if (star != std::string::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace

// Live progress: a rewritten line on a terminal, plain lines every ~10% otherwise, nothing if quiet.
struct Progress {
  bool quiet = false, tty = false;
  std::size_t index = 0, total = 0;
  std::string run_id;
  Clock::time_point run_start;
  void line(const std::string& s) const {
    if (quiet) return;
    if (tty) std::fprintf(stderr, "\r\033[K%s", s.c_str());
    else std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
  }
  void step(const StepLog& s, int steps) const {
    if (quiet) return;
    const int every = std::max(1, steps / 10);
    if (!tty && s.step % every != 0 && s.step + 1 != steps) return;
    const double el = ms_between(run_start, Clock::now()) / 1000.0;
    const double rate = (s.step + 1) / std::max(el, 1e-9);
    const double eta = (steps - s.step - 1) / std::max(rate, 1e-9);
    char buf[256];
    std::snprintf(buf, sizeof buf, "[run %zu/%zu] %s  step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", index + 1,
                  total, run_id.c_str(), s.step + 1, steps, s.loss, rate, eta);
    line(buf);
  }
  void done(const std::string& s) const {
    if (quiet) return;
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
  }
};

const std::vector<std::string>& phase_names() {
  static const std::vector<std::string> k = {"preprocess", "vision", "connector", "lm_prefill",
                                             "prefill",    "decode", "train_step"};
  return k;
}

double median(std::vector<double> v) { return percentile(std::move(v), 50.0); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

namespace {

// Latency, memory and cost at batch 1 and one resolution.
void measure_at(Vlm& vlm, const data::Sample& base, int64_t res, const MeasureOptions& m, RunResult& r) {
  NoGradGuard no_grad;
  const data::Sample s = at_resolution(base, res);
  const std::vector<MultimodalSample> rows{vlm.prompt(s)};
  std::map<std::string, std::vector<double>> t;
  std::optional<MemoryRow> mem_prefill, mem_decode, mem_pre;
  for (int rep = -m.warmup; rep < m.repeats; ++rep) {
    const bool keep = rep >= 0;
    reset_peak_memory();
    auto t0 = Clock::now();
    const Inputs in = vlm.processor().make_inputs(rows);
    auto t1 = Clock::now();
    if (keep) t["preprocess"].push_back(ms_between(t0, t1));
    if (!mem_pre) mem_pre = memory_row("preprocess");
    reset_peak_memory();
    std::unique_ptr<DecodeState> state;
    Tensor logits;
    {
      PhaseCapture cap;
      t0 = Clock::now();
      std::tie(logits, state) = vlm.model().prefill(in);
      t1 = Clock::now();
      if (keep) {
        const double total = ms_between(t0, t1), v = cap.ms("vision"), c = cap.ms("connector");
        t["prefill"].push_back(total);
        t["vision"].push_back(v);
        t["connector"].push_back(c);
        t["lm_prefill"].push_back(total - v - c);
      }
    }
    if (!mem_prefill) mem_prefill = memory_row("prefill");
    reset_peak_memory();
    const int64_t first = vlm.vocab().id(s.answer.at(0));
    t0 = Clock::now();
    for (int k = 0; k < m.decode_tokens; ++k) logits = vlm.model().decode(*state, {first});
    t1 = Clock::now();
    if (keep) t["decode"].push_back(ms_between(t0, t1) / m.decode_tokens);
    if (!mem_decode) mem_decode = memory_row("decode");
  }
  for (const std::string& phase : phase_names()) {
    if (!t.count(phase)) continue;
    r.latency.push_back(LatencyRow{.phase = phase, .resolution = res, .samples_ms = t[phase]});
  }
  for (auto* row : {&mem_pre, &mem_prefill, &mem_decode}) {
    (*row)->phase += "@" + std::to_string(res);
    r.memory.push_back(**row);
  }
  const InferenceCost c = inference_cost(vlm, s);
  r.cost.push_back(CostRow{.resolution = res,
                           .visual_tokens = c.visual_tokens,
                           .lm_tokens = c.lm_tokens,
                           .prefill_flops = c.prefill_flops,
                           .decode_flops_per_token = c.decode_flops_per_token});
}

}  // namespace

RunResult execute_run(const RunSpec& spec, Progress* progress) {
  RunResult r;
  r.run_id = spec.run_id;
  r.family = spec.variant.family;
  r.variant = spec.variant.name;
  r.seed = spec.seed;
  r.resolved_config = spec.resolved_toml;
  for (const auto& [k, v] : spec.sweep_point) r.sweep += (r.sweep.empty() ? "" : ";") + k + "=" + v;
  r.gallery = spec.config.eval.gallery;
  r.batch_size = spec.config.train.batch_size;
  r.started_utc = utc_now();
  const auto t_start = Clock::now();
  try {
    const Experiment& e = spec.config;
    const auto task = data::make_task(e.task, e.task_params);
    Vlm vlm(spec.vlm_spec(), *task);
    r.params = vlm.param_counts();

    reset_peak_memory();
    r.train = train(vlm, *task, e.train, [&](const StepLog& s) {
      if (progress) progress->step(s, e.train.steps);
    });
    r.memory.push_back(memory_row("train"));
    {
      // Training-step latency: every step after the first few (allocation warm-up).
      std::vector<double> ms;
      for (std::size_t i = std::min<std::size_t>(static_cast<std::size_t>(e.measure.warmup), r.train.size() / 2);
           i < r.train.size(); ++i)
        ms.push_back(r.train[i].step_ms);
      if (!ms.empty())
        r.latency.push_back(LatencyRow{.phase = "train_step", .resolution = task->max_image_size().first, .samples_ms = ms});
    }
    r.eval = evaluate(vlm, *task, e.eval.samples, e.eval.batch_size);
    if (e.measure.enabled) {
      const data::Sample base = task->sample(data::Split::kEval, 0);
      for (const int64_t res : e.measure.resolutions) measure_at(vlm, base, res, e.measure, r);
    }
    r.status = "complete";
  } catch (const std::exception& ex) {
    r.status = "failed";
    r.error = ex.what();
  }
  r.finished_utc = utc_now();
  r.wall_s = ms_between(t_start, Clock::now()) / 1000.0;
  return r;
}

int run_experiment(const LoadedExperiment& exp, const RunOptions& opt) {
  const int threads = opt.threads > 0 ? opt.threads : exp.base.threads;
  set_num_threads(threads);
  const std::string out = opt.out.empty() ? "results/" + exp.base.name + ".h5" : opt.out;
  if (std::filesystem::path(out).has_parent_path()) std::filesystem::create_directories(std::filesystem::path(out).parent_path());

  ResultsFile file(out, exp, threads);
  if (std::filesystem::exists(out)) {
    if (opt.resume) {
      file.load_existing();
    } else if (!opt.overwrite) {
      throw ConfigError(out + " exists: pass --resume to finish it, or --overwrite to start over");
    }
  }
  std::vector<const RunSpec*> todo;
  for (const RunSpec& r : exp.runs) {
    if (!opt.only.empty() && !glob_match(opt.only, r.run_id)) continue;
    if (file.is_complete(r.run_id)) continue;
    todo.push_back(&r);
  }
  Progress progress;
  progress.quiet = opt.quiet;
  progress.tty = isatty(STDERR_FILENO) != 0;
  progress.total = todo.size();
  if (!opt.quiet)
    std::fprintf(stderr, "vlmlab run: %s, %zu run(s) to do (%zu in the experiment), %d thread(s) -> %s\n",
                 exp.base.name.c_str(), todo.size(), exp.runs.size(), threads, out.c_str());
  int failed = 0;
  std::vector<std::string> table;
  for (std::size_t i = 0; i < todo.size(); ++i) {
    progress.index = i;
    progress.run_id = todo[i]->run_id;
    progress.run_start = Clock::now();
    RunResult r = execute_run(*todo[i], &progress);
    r.threads = threads;
    file.add(r);  // durable before the next run starts
    char buf[512];
    double acc = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().accuracy;
    double maj = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().majority;
    if (r.status == "complete")
      std::snprintf(buf, sizeof buf, "[run %zu/%zu] %s: accuracy %.3f (majority %.3f), %.1f s", i + 1, todo.size(),
                    r.run_id.c_str(), acc, maj, r.wall_s);
    else
      std::snprintf(buf, sizeof buf, "[run %zu/%zu] %s: FAILED: %s", i + 1, todo.size(), r.run_id.c_str(),
                    r.error.c_str());
    progress.done(buf);
    failed += r.status != "complete";
    if (r.status == "complete") {
      // The summary row's own figures (results.h), so the table and /summary cannot disagree.
      const SummaryRow row = summary_of(r);
      const SubtypeScore& all = r.eval.scores.back();
      std::snprintf(buf, sizeof buf, "  %-28s %8.3f %8.3f %8.3f %10lld %6lld %10.2f %10.3f %10.1f", r.run_id.c_str(),
                    row.accuracy, all.majority, all.chance, static_cast<long long>(row.params),
                    static_cast<long long>(row.visual_tokens), row.prefill_ms, row.decode_ms_per_token,
                    row.train_step_ms);
      table.emplace_back(buf);
    }
  }
  if (!opt.quiet && !table.empty()) {
    std::printf("%s: %zu run(s) written to %s\n", exp.base.name.c_str(), table.size(), out.c_str());
    std::printf("  %-28s %8s %8s %8s %10s %6s %10s %10s %10s\n", "run", "accuracy", "majority", "chance", "params",
                "vis.tok", "prefill_ms", "decode_ms", "step_ms");
    for (const std::string& line : table) std::printf("%s\n", line.c_str());
    std::printf("(vis.tok, prefill and decode at batch 1 and each run's first resolution; step_ms at its training "
                "batch; medians; nan where measuring is off)\n");
  }
  if (todo.empty()) file.add_nothing();  // still writes the root metadata for a fresh file
  return failed > 0 ? 1 : 0;
}

}  // namespace vlm::exp
