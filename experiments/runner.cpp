#include "experiments/runner.h"

#include <thread>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>

#include "experiments/checkpoint.h"
#include "experiments/dist.h"
#include "experiments/results.h"
#include "experiments/stages.h"
#include "lib/core/memory.h"
#include "lib/core/parallel.h"
#include "lib/core/test_hook.h"
#include "lib/measure/flops.h"
#include "lib/measure/phase.h"
#include "training/cost.h"

namespace vlm::exp {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
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

MemoryRow max_of(const MemoryRow& a, const MemoryRow& b) {
  return MemoryRow{.phase = b.phase,
                   .params = std::max(a.params, b.params),
                   .grads = std::max(a.grads, b.grads),
                   .optimizer = std::max(a.optimizer, b.optimizer),
                   .activations = std::max(a.activations, b.activations),
                   .kv_cache = std::max(a.kv_cache, b.kv_cache),
                   .peak = std::max(a.peak, b.peak),
                   .peak_rss = std::max(a.peak_rss, b.peak_rss)};
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
  bool show_steps = true;  // per-step lines (under MPI only the root's)
  std::string prefix;  // "rank R: " under MPI
  std::size_t index = 0, total = 0;
  std::string run_id;
  Clock::time_point run_start;
  void line(const std::string& s) const {
    if (quiet) return;
    if (tty) std::fprintf(stderr, "\r\033[K%s%s", prefix.c_str(), s.c_str());
    else std::fprintf(stderr, "%s%s\n", prefix.c_str(), s.c_str());
    std::fflush(stderr);
  }
  void step(const StepLog& s, int steps) const {
    if (quiet || !show_steps) return;
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
    if (tty && show_steps) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s%s\n", prefix.c_str(), s.c_str());
    std::fflush(stderr);
  }
};

const std::vector<std::string>& phase_names() {
  static const std::vector<std::string> k = {"preprocess", "vision", "connector", "lm_prefill",
                                             "prefill",    "decode", "train_step"};
  return k;
}

double median(std::vector<double> v) { return percentile(std::move(v), 50.0); }

data::Sample at_resolution(data::Sample s, int64_t side) {
  for (data::Image& im : s.images) {
    data::Image out(side, side);
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x) out.set(y, x, im.at(y * im.height / side, x * im.width / side));
    im = std::move(out);
  }
  return s;
}

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

RunResult execute_run(const RunSpec& spec, Progress* progress, const std::string& out,
                      const std::string& experiment_toml, bool data_parallel) {
  RunResult r;
  r.rank = dist::rank();
  r.host = dist::host();
  r.cpu = cpu_model();
  r.cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  r.run_id = spec.run_id;
  r.family = spec.variant.family;
  r.variant = spec.variant.name;
  r.seed = spec.seed;
  r.resolved_config = spec.resolved_toml;
  for (const auto& [k, v] : spec.sweep_point) r.sweep += (r.sweep.empty() ? "" : ";") + k + "=" + v;
  r.gallery = spec.config.eval.gallery;
  r.keep_items = spec.config.eval.keep_items;
  r.batch_size = spec.config.train.batch_size;
  r.curve_threshold = spec.config.eval.threshold;
  r.started_utc = utc_now();
  const auto t_start = Clock::now();
  TrainState state;
  try {
    const Experiment& e = spec.config;
    const auto task = data::make_task(e.task, e.task_params);
    std::vector<std::unique_ptr<data::Task>> stage_tasks;
    std::vector<const data::Task*> more;
    for (const Stage& st : e.stages) {
      stage_tasks.push_back(make_stage_task(st));
      more.push_back(stage_tasks.back().get());
    }
    Vlm vlm(spec.vlm_spec(), *task, more);
    r.params = vlm.param_counts();
    if (data_parallel) r.ranks = dist::size();
    // Under data parallelism the root validates and checkpoints; every rank continues from the
    // checkpoint the root found (a results folder all ranks share).
    const bool lead = !data_parallel || dist::root();
    const CheckpointStore ckpt(out, spec.run_id, experiment_toml, spec.resolved_toml, e.train.checkpoint_keep);
    std::string from = lead ? ckpt.latest() : std::string();
    if (data_parallel) from = dist::broadcast(from);
    // Training's memory peaks before the checkpoint: the run's peaks are the larger of those and
    // this process's, as one uninterrupted process would have measured them.
    // Each stage's peaks are its own (stage_memory: the stages done, in order).
    MemoryRow carried{.phase = "train"};
    std::vector<MemoryRow> stage_memory;
    const auto row_of = [](const nlohmann::json& m, const std::string& phase) {
      return MemoryRow{.phase = phase,
                       .params = m.value("params", int64_t{0}),
                       .grads = m.value("grads", int64_t{0}),
                       .optimizer = m.value("optimizer", int64_t{0}),
                       .activations = m.value("activations", int64_t{0}),
                       .kv_cache = m.value("kv_cache", int64_t{0}),
                       .peak = m.value("peak", int64_t{0}),
                       .peak_rss = m.value("peak_rss", int64_t{0})};
    };
    const auto json_of = [](const MemoryRow& m) {
      return nlohmann::json{{"phase", m.phase},         {"params", m.params}, {"grads", m.grads},
                            {"optimizer", m.optimizer}, {"activations", m.activations},
                            {"kv_cache", m.kv_cache},   {"peak", m.peak},     {"peak_rss", m.peak_rss}};
    };
    if (!from.empty()) {
      nlohmann::json extra;
      state = ckpt.load(vlm, from, &extra);
      if (extra.contains("memory")) carried = row_of(extra["memory"], "train");
      for (const nlohmann::json& m : extra.value("stage_memory", nlohmann::json::array()))
        stage_memory.push_back(row_of(m, m.value("phase", std::string("train"))));
      r.resumed_from = state.steps_done;
      if (progress && lead)
        progress->line("continuing " + spec.run_id + " from its checkpoint at step " + std::to_string(state.steps_done));
    }
    TrainHooks hooks;
    // The progress file (results.h): written after the first step, after the step following each
    // validation point (the point is added after its step's hook) and at least every 10 s, so the
    // training rows and the curve can be read while the run goes on.
    std::size_t progress_points = 0;
    std::optional<Clock::time_point> progress_at;
    hooks.on_step = [&](const StepLog& s) {
      if (progress) progress->step(s, e.train.steps);
      if (lead && (!progress_at || state.curve.size() != progress_points ||
                   ms_between(*progress_at, Clock::now()) >= 10'000)) {
        RunResult partial = r;
        partial.status = "running";
        partial.train = state.log;
        partial.curve = state.curve;
        write_progress(progress_path(out, spec.run_id), e.name, partial, e.train.steps);
        progress_points = state.curve.size();
        progress_at = Clock::now();
      }
      if (test_pauses_enabled()) test_pause_point("after-step:" + std::to_string(s.step + 1));
    };
    if (lead && e.train.checkpoint_every > 0) {
      hooks.checkpoint_every = e.train.checkpoint_every;
      hooks.checkpoint = [&](const TrainState& st) {
        nlohmann::json done = nlohmann::json::array();
        for (const MemoryRow& m : stage_memory) done.push_back(json_of(m));
        ckpt.save(vlm, st, {{"memory", json_of(max_of(carried, memory_row("train")))}, {"stage_memory", done}});
      };
    }
    // The stages in order, each from the weights the previous one ended with. A stage a family skips
    // takes no steps, but the later stages draw the samples they draw for every other family.
    int first_step = 0, data_step = 0, last_trained = -1;
    int64_t samples_before = 0;
    std::vector<StagePlan> plans;
    for (const Stage& st : e.stages) plans.push_back(plan_stage(vlm, st));
    for (std::size_t k = 0; k < plans.size(); ++k)
      if (!plans[k].skipped) last_trained = static_cast<int>(k);
    std::size_t trained_stages = 0;
    reset_peak_memory();
    for (std::size_t k = 0; k < e.stages.size(); ++k) {
      const Stage& st = e.stages[k];
      const StagePlan& plan = plans[k];
      StageRecord rec;
      rec.name = st.name, rec.task = st.task_text();
      for (const std::string& x : st.trains) append_listed(rec.trains, x);
      for (const std::string& x : st.freezes) append_listed(rec.freezes, x);
      for (const auto& [sel, x] : st.lr_scale) {
        std::ostringstream os;
        os << sel << "=" << x;
        append_listed(rec.lr_scale, os.str());
      }
      for (const auto& [sel, dir] : plan.init_from) append_listed(rec.init_from, sel + " <- " + dir);
      for (const std::string& sel : plan.init_skipped)
        append_listed(rec.init_from, sel + " (skipped: " + vlm.family() + " has none)");
      rec.trained_params = plan.trained_params, rec.frozen_params = plan.frozen_params;
      rec.first_step = first_step;
      if (plan.skipped) {
        rec.status = "skipped", rec.reason = plan.reason, rec.steps = 0;
        r.stages.push_back(rec);
        data_step += st.train.steps;
        continue;
      }
      rec.steps = st.train.steps;
      TrainOptions topt = st.train;
      std::vector<std::unique_ptr<data::Task>> phase_tasks;
      for (const TrainPhase& ph : st.phases) {
        phase_tasks.push_back(data::make_task(st.task, ph.task_params));
        topt.phases.push_back({.steps = ph.steps, .task = phase_tasks.back().get()});
      }
      if (data_parallel) {
        topt.dp_rank = dist::rank();
        topt.dp_ranks = dist::size();
        topt.dp_sum = dist::sum_in_rank_order;
      }
      topt.first_step = first_step, topt.data_first_step = data_step, topt.stage = static_cast<int>(k);
      topt.samples_before = samples_before;
      topt.checkpoint_last = static_cast<int>(k) != last_trained;
      topt.frozen = plan.frozen, topt.lr_scale = plan.lr_scale;
      const bool begins = state.steps_done == first_step &&
                          std::none_of(state.curve.begin(), state.curve.end(),
                                       [&](const CurvePoint& p) { return p.stage == static_cast<int>(k); });
      const bool done = state.steps_done >= first_step + st.train.steps;
      if (begins) {
        apply_init(vlm, st, plan);  // a stage begun before the checkpoint has these in its weights
        carried = MemoryRow{.phase = "train"};
        reset_peak_memory();
      }
      const data::Task& stage_task = *stage_tasks[k];
      hooks.validate = {};
      if (lead && e.eval.val_samples > 0) {
        hooks.eval_every = e.eval.every_or_default(st.train.steps);
        hooks.validate = [&] {
          return evaluate(vlm, stage_task, data::Split::kValidation, e.eval.val_samples, e.eval.batch_size).scores;
        };
      }
      train(vlm, stage_task, topt, state, hooks);
      ++trained_stages;
      if (stage_memory.size() < trained_stages) {  // else the checkpoint held this finished stage's row
        MemoryRow m = done ? carried : max_of(carried, memory_row("train"));
        m.phase = "train:" + st.name;
        stage_memory.push_back(m);
      }
      r.stages.push_back(rec);
      first_step += st.train.steps, data_step += st.train.steps;
      samples_before += static_cast<int64_t>(st.train.steps) * st.train.batch_size;
    }
    r.train = state.log;
    r.curve = state.curve;
    if (data_parallel && !dist::root()) {  // the root evaluates and measures the model all ranks hold
      r.status = "complete";
      return r;
    }
    {
      MemoryRow all{.phase = "train"};
      for (const MemoryRow& m : stage_memory) all = max_of(all, m);
      all.phase = "train";
      r.memory.push_back(all);
      if (e.staged) r.memory.insert(r.memory.end(), stage_memory.begin(), stage_memory.end());
    }
    {
      // Training-step latency: every step of the last stage after the first few (allocation warm-up);
      // a run continued from a checkpoint counts the steps the interrupted process timed too.
      std::vector<double> ms;
      std::vector<StepLog> last;
      for (const StepLog& s : r.train)
        if (s.stage == last_trained) last.push_back(s);
      for (std::size_t i = std::min<std::size_t>(static_cast<std::size_t>(e.measure.warmup), last.size() / 2);
           i < last.size(); ++i)
        ms.push_back(last[i].step_ms);
      if (!ms.empty())
        r.latency.push_back(LatencyRow{.phase = "train_step", .resolution = task->max_image_size().first, .samples_ms = ms});
    }
    // The trained model, kept before it is scored: `vlmlab eval` on it gives the same test numbers.
    {
      nlohmann::json task_params = nlohmann::json::object();
      for (const auto& [k, v] : e.task_params) std::visit([&, key = k](const auto& x) { task_params[key] = x; }, v);
      vlm.save(model_dir(out, spec.run_id),
               {{"run_id", spec.run_id},
                {"experiment", e.name},
                {"task", {{"name", e.task}, {"params", task_params}}},
                {"eval", {{"samples", e.eval.samples}, {"batch_size", e.eval.batch_size}}},
                {"threads", num_threads()}});
      r.model_dir = model_dir_relative(out, spec.run_id);
    }
    r.eval = evaluate(vlm, *task, data::Split::kTest, e.eval.samples, e.eval.batch_size);
    if (e.measure.enabled) {
      const data::Sample base = task->sample(data::Split::kTest, 0);
      for (const int64_t res : e.measure.resolutions) measure_at(vlm, base, res, e.measure, r);
    }
    r.status = "complete";
  } catch (const ConfigError&) {
    throw;  // a config that cannot run (a checkpoint of other text): nothing was trained
  } catch (const std::exception& ex) {
    r.status = "failed";
    r.error = ex.what();
    r.train = state.log;  // what was trained before it failed (a diverged run keeps its curve)
    r.curve = state.curve;
  }
  r.finished_utc = utc_now();
  r.wall_s = ms_between(t_start, Clock::now()) / 1000.0;
  return r;
}

namespace {

// Longest processing time first: the runs by estimated cost, most expensive first, each to the rank
// with the least estimated work so far (the lowest rank on a tie). Every rank computes the same plan
// from the same config, so no message is needed. Each rank then runs its share in experiment order
// (`runs` point into one vector), as a single process runs them all.
std::vector<std::vector<const RunSpec*>> spread(std::vector<const RunSpec*> runs, int ranks) {
  std::stable_sort(runs.begin(), runs.end(),
                   [](const RunSpec* a, const RunSpec* b) { return a->cost_flops > b->cost_flops; });
  std::vector<std::vector<const RunSpec*>> plan(static_cast<std::size_t>(ranks));
  std::vector<double> load(plan.size(), 0.0);
  for (const RunSpec* r : runs) {
    const auto k = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    plan[k].push_back(r);
    load[k] += r->cost_flops;
  }
  for (auto& mine : plan) std::sort(mine.begin(), mine.end(), std::less<const RunSpec*>());
  return plan;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VLM_CHECK(in, "cannot read " << path);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  VLM_CHECK(out, "cannot write " << path);
}

double gflop(const std::vector<const RunSpec*>& runs) {
  double f = 0;
  for (const RunSpec* r : runs) f += r->cost_flops;
  return f / 1e9;
}

// What the root found in the results file, for every rank: "ok" and the completed run ids, or the
// error that stops the run ("config" or "error", then the message).
std::string look_at_results_file(ResultsFile& file, const std::string& out, const LoadedExperiment& exp,
                                 const RunOptions& opt, std::optional<ResultsLock>& lock) {
  try {
    if (std::filesystem::is_directory(out))
      throw ConfigError(out + " is a folder; --out takes the results file's path (e.g. " +
                        (std::filesystem::path(out) / (exp.base.name + ".h5")).string() + ")");
    if (std::filesystem::is_symlink(out))
      throw ConfigError(out + " is a symbolic link; give the results file's own path");
    if (std::filesystem::path(out).has_parent_path())
      std::filesystem::create_directories(std::filesystem::path(out).parent_path());
    lock.emplace(out);  // refused here if another writer holds the file
    remove_stale_temps(out);
    const std::vector<std::string> parts = part_files(out);
    const bool exists = std::filesystem::exists(out);
    if (exists && !opt.resume && !opt.overwrite)
      throw ConfigError(out + " exists: pass --resume to finish it, or --overwrite to start over");
    if (!parts.empty() && !opt.resume && !opt.overwrite)
      throw ConfigError(parts.front() + " holds runs of an interrupted MPI job writing " + out +
                        ": pass --resume to finish it, or --overwrite to start over");
    if (has_checkpoints(out) && !opt.resume && !opt.overwrite)
      throw ConfigError(artifacts_dir(out) + "/checkpoints holds checkpoints of an interrupted run writing " + out +
                        ": pass --resume to continue it, or --overwrite to start over");
    if (opt.overwrite && !opt.resume) remove_artifacts(out);
    if (opt.resume) {
      if (exists) file.load_existing();
      file.fold(parts);  // the runs other ranks completed before the job ended, now in the file
    }
    remove_part_files(out);  // folded in, or dropped by --overwrite
    std::string msg = "ok\n";
    for (const RunSpec& r : exp.runs) {
      const CheckpointStore ckpt(out, r.run_id, exp.toml_text, r.resolved_toml, 1);
      if (file.is_complete(r.run_id)) {
        msg += r.run_id + "\n";
        ckpt.remove_all();  // left by a writer killed between recording the run and cleaning up
      } else if (const std::string latest = ckpt.latest(); !latest.empty()) {
        ckpt.check_belongs(latest);  // refused now, before anything runs, rather than when the run reaches it
      }
    }
    return msg;
  } catch (const ConfigError& e) {
    return std::string("config\n") + e.what();
  } catch (const std::exception& e) {
    return std::string("error\n") + e.what();
  }
}

}  // namespace

// Under MPI (experiments/dist.h) every rank runs this together. The root alone owns the results file;
// the other ranks write their completed runs durably into part files of their own (PATH.partR), which
// the root folds in after each of its runs and at the end, so a rank that dies loses only its run in
// progress and --resume (with any number of ranks) finishes the rest. Runs marked data_parallel are
// trained by all ranks together first; the others are spread over the ranks by estimated cost.
int run_experiment(const LoadedExperiment& exp, const RunOptions& opt) {
  const int threads = opt.threads > 0 ? opt.threads : exp.base.threads;
  set_num_threads(threads);
  const std::string out = opt.out.empty() ? "results/" + exp.base.name + ".h5" : opt.out;
  const int me = dist::rank(), ranks = dist::size();
  const bool root = dist::root();

  ResultsFile file(out, exp, threads);
  std::optional<ResultsLock> lock;  // the root's, held until the experiment ends
  const std::string found =
      dist::broadcast(root ? look_at_results_file(file, out, exp, opt, lock) : std::string());
  const std::size_t nl = found.find('\n');
  const std::string kind = found.substr(0, nl), rest = found.substr(nl + 1);
  if (kind == "config") throw ConfigError(rest);
  if (kind == "error") throw Error(rest);
  std::set<std::string> done;
  std::istringstream ids(rest);
  for (std::string id; std::getline(ids, id);) done.insert(id);

  std::vector<const RunSpec*> todo, together, solo;
  for (const RunSpec& r : exp.runs) {
    if (!opt.only.empty() && !glob_match(opt.only, r.run_id)) continue;
    if (done.count(r.run_id)) continue;
    todo.push_back(&r);
    (ranks > 1 && r.config.train.data_parallel ? together : solo).push_back(&r);
  }
  const std::vector<std::vector<const RunSpec*>> plan = spread(solo, ranks);
  const std::vector<std::string> hosts = dist::gather(dist::host());
  if (!opt.quiet && root) {
    std::fprintf(stderr, "vlmlab run: %s, %zu run(s) to do (%zu in the experiment), %d thread(s) -> %s\n",
                 exp.base.name.c_str(), todo.size(), exp.runs.size(), threads, out.c_str());
    if (ranks > 1 && !todo.empty()) {
      if (!together.empty())
        std::fprintf(stderr, "  %zu run(s) data-parallel over all %d ranks, est. %.3g GFLOP\n", together.size(), ranks,
                     gflop(together));
      for (int k = 0; k < ranks && !solo.empty(); ++k) {
        const auto& mine = plan[static_cast<std::size_t>(k)];
        std::fprintf(stderr, "  rank %d on %s: %zu run(s), est. %.3g GFLOP\n", k,
                     hosts[static_cast<std::size_t>(k)].c_str(), mine.size(), gflop(mine));
      }
    }
  }

  Progress progress;
  progress.quiet = opt.quiet;
  progress.tty = isatty(STDERR_FILENO) != 0;
  progress.show_steps = root;
  if (ranks > 1) progress.prefix = "rank " + std::to_string(me) + ": ";
  int failed = 0, recorded = 0;
  std::string table;  // "index in exp.runs <TAB> line" per completed run, gathered on the root
  std::unique_ptr<ResultsFile> part;
  if (!root) part = std::make_unique<ResultsFile>(part_path(out, me), exp, threads);
  const auto record = [&](RunResult r, std::size_t i, std::size_t n, const RunSpec* spec) {
    r.threads = threads;
    if (root) {
      file.add(r);  // durable before the next run starts
      if (ranks > 1) file.fold(part_files(out));
    } else {
      part->add(r);  // durable too; the root folds it in
    }
    // Recorded: its checkpoints are no longer needed (a failed run starts over on --resume).
    CheckpointStore(out, r.run_id, exp.toml_text, spec->resolved_toml, 1).remove_all();
    std::error_code gone;  // and its progress file: the results file holds all of it now
    std::filesystem::remove(progress_path(out, r.run_id), gone);
    test_pause_point("run-recorded:" + std::to_string(++recorded));
    char buf[512];
    double acc = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().accuracy;
    double maj = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().majority;
    const SummaryRow head = summary_of(r);
    char headline[128] = "";  // a task scored by another metric first says it (lib/data/metrics.h)
    if (head.metric != "exact_match")
      std::snprintf(headline, sizeof headline, ", %s %.3f (baseline %.3f)", head.metric.c_str(), head.score,
                    head.score_baseline);
    if (r.status == "complete")
      std::snprintf(buf, sizeof buf, "[run %zu/%zu] %s: accuracy %.3f (majority %.3f)%s, %.1f s", i + 1, n,
                    r.run_id.c_str(), acc, maj, headline, r.wall_s);
    else
      std::snprintf(buf, sizeof buf, "[run %zu/%zu] %s: FAILED: %s", i + 1, n, r.run_id.c_str(), r.error.c_str());
    progress.done(buf);
    failed += r.status != "complete";
    if (r.status == "complete") {
      // The summary row's own figures (results.h), so the table and /summary cannot disagree.
      const SummaryRow row = summary_of(r);
      const SubtypeScore& all = r.eval.scores.back();
      std::snprintf(buf, sizeof buf, "  %-28s %8.3f %8.3f %8.3f %10lld %6lld %10.2f %10.3f %10.1f  %-13s %8.3f %8.3f",
                    r.run_id.c_str(), row.accuracy, all.majority, all.chance, static_cast<long long>(row.params),
                    static_cast<long long>(row.visual_tokens), row.prefill_ms, row.decode_ms_per_token,
                    row.train_step_ms, row.metric.c_str(), row.score, row.score_baseline);
      table += std::to_string(spec - exp.runs.data()) + "\t" + buf + "\n";
    }
  };

  try {
    // Data-parallel runs, all ranks on each; the others sleep while the root evaluates and measures.
    for (std::size_t i = 0; i < together.size(); ++i) {
      progress.index = i;
      progress.total = together.size();
      progress.run_id = together[i]->run_id;
      progress.run_start = Clock::now();
      RunResult r = execute_run(*together[i], &progress, out, exp.toml_text, true);
      if (root) record(std::move(r), i, together.size(), together[i]);
      dist::wait_for_all();
    }
    // This rank's share of the rest.
    const auto& mine = plan[static_cast<std::size_t>(me)];
    for (std::size_t i = 0; i < mine.size(); ++i) {
      progress.index = i;
      progress.total = mine.size();
      progress.run_id = mine[i]->run_id;
      progress.run_start = Clock::now();
      record(execute_run(*mine[i], &progress, out, exp.toml_text), i, mine.size(), mine[i]);
    }
    // Every rank done: the root folds in the parts and puts the runs in experiment order, so the file
    // reads as a single process's would. A part the root cannot see (the results directory is not on
    // a filesystem every host shares) comes over MPI.
    dist::wait_for_all();
    std::string unseen;
    for (int k = 1; root && k < ranks; ++k)
      if (!plan[static_cast<std::size_t>(k)].empty() && !std::filesystem::exists(part_path(out, k)))
        unseen += " " + std::to_string(k) + " ";
    unseen = dist::broadcast(unseen);
    const bool send = !root && unseen.find(" " + std::to_string(me) + " ") != std::string::npos;
    const std::vector<std::string> sent = dist::gather(send ? read_bytes(part_path(out, me)) : std::string());
    if (root) {
      for (std::size_t k = 1; k < sent.size(); ++k)
        if (!sent[k].empty()) write_bytes(part_path(out, static_cast<int>(k)), sent[k]);
      file.fold(part_files(out));
      remove_part_files(out);
      // The progress folder, once every rank has finished (if empty: a run still being written by a
      // killed job's survivor keeps it). Not after each run: another rank may be writing into it.
      std::error_code gone;
      std::filesystem::remove(progress_dir(out), gone);
      std::string lost;  // defensive: every run this job did must be in the file now
      const std::vector<std::string> in_file = file.run_ids();
      for (const RunSpec* r : todo)
        if (std::find(in_file.begin(), in_file.end(), r->run_id) == in_file.end()) lost += " " + r->run_id;
      if (!lost.empty()) throw Error("runs done by other ranks are missing from " + out + ":" + lost);
      if (todo.empty()) {
        file.add_nothing();  // still writes the root metadata for a fresh file
      } else {
        std::vector<std::string> order;
        for (const RunSpec& r : exp.runs) order.push_back(r.run_id);
        file.put_in_order(order);
      }
    }
    failed = static_cast<int>(dist::sum(failed));  // the root has folded every part by now
    if (!root) {
      std::error_code ec;  // a part on a disk of this host only, sent over MPI above
      std::filesystem::remove(part_path(out, me), ec);
    }
    table = [&] {
      std::string all;
      for (const std::string& t : dist::gather(table)) all += t;
      return all;
    }();
  } catch (const std::exception& e) {
    if (ranks > 1) {  // the other ranks would wait for this one forever
      std::fprintf(stderr, "vlmlab run: rank %d on %s: error: %s\n", me, dist::host().c_str(), e.what());
      dist::abort_job(1);
    }
    throw;
  }

  if (root && !opt.quiet && !table.empty()) {
    std::vector<std::pair<long, std::string>> rows;
    std::istringstream in(table);
    for (std::string l; std::getline(in, l);) {
      const std::size_t tab = l.find('\t');
      rows.emplace_back(std::stol(l.substr(0, tab)), l.substr(tab + 1));
    }
    std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::printf("%s: %zu run(s) written to %s\n", exp.base.name.c_str(), rows.size(), out.c_str());
    std::printf("  %-28s %8s %8s %8s %10s %6s %10s %10s %10s  %-13s %8s %8s\n", "run", "accuracy", "majority",
                "chance", "params", "vis.tok", "prefill_ms", "decode_ms", "step_ms", "headline", "score", "baseline");
    for (const auto& [i, line] : rows) std::printf("%s\n", line.c_str());
    std::printf("(accuracy: exact match on the test split; headline: the task's own metric (exact_match, cer: "
                "character error rate, lower is better, ...) against its baseline (majority answer, majority "
                "string, median answer); vis.tok, prefill and decode at batch 1 and each run's first resolution; "
                "step_ms at its training batch; medians; nan where measuring is off)\n");
  }
  return failed > 0 ? 1 : 0;
}

}  // namespace vlm::exp
