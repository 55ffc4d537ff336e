#include "experiments/results.h"

#include "experiments/checkpoint.h"

#include <cblas.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "version.h"  // generated: experiments/meson.build

namespace vlm::exp {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return "unknown";
}

std::string blas_config() {
  std::ostringstream os;
  os << "OpenBLAS " << openblas_get_config();
  return os.str();
}

std::string compiler_version() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

SummaryRow summary_of(const RunResult& r) {
  SummaryRow s{.run_id = r.run_id,
               .family = r.family,
               .variant = r.variant,
               .status = r.status,
               .seed = static_cast<int64_t>(r.seed),
               .params = r.params.total(),
               .accuracy = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().accuracy,
               .prefill_ms = std::nan(""),
               .decode_ms_per_token = std::nan(""),
               .train_step_ms = std::nan("")};
  s.metric = r.eval.headline;
  s.score = s.accuracy;
  s.score_baseline = r.eval.scores.empty() ? std::nan("") : r.eval.scores.back().majority;
  for (const data::MetricScore& m : r.eval.metrics)
    if (m.metric == s.metric && m.subtype == "all") {
      s.score = m.value;
      s.score_baseline = m.baseline;
    }
  if (s.metric != "exact_match" && std::none_of(r.eval.metrics.begin(), r.eval.metrics.end(),
                                                 [&](const data::MetricScore& m) { return m.metric == s.metric; }))
    s.score = s.score_baseline = std::nan("");  // not scored (a failed run)
  // The first configured resolution stands for the run in the summary.
  if (!r.cost.empty()) s.visual_tokens = r.cost.front().visual_tokens;
  const int64_t res0 = r.cost.empty() ? 0 : r.cost.front().resolution;
  for (const LatencyRow& l : r.latency) {
    if (l.phase == "prefill" && l.resolution == res0) s.prefill_ms = median(l.samples_ms);
    if (l.phase == "decode" && l.resolution == res0) s.decode_ms_per_token = median(l.samples_ms);
    if (l.phase == "train_step") s.train_step_ms = median(l.samples_ms);
  }
  for (const MemoryRow& m : r.memory) s.peak_bytes = std::max(s.peak_bytes, m.peak);
  return s;
}

namespace {

io::Table summary_table(const std::vector<SummaryRow>& rows) {
  io::Table t;
  std::vector<std::string> id, fam, var, status, metric;
  std::vector<int64_t> seed, params, vt, peak;
  std::vector<double> acc, pre, dec, step, score, score_base;
  for (const SummaryRow& r : rows) {
    metric.push_back(r.metric);
    score.push_back(r.score);
    score_base.push_back(r.score_baseline);
    id.push_back(r.run_id);
    fam.push_back(r.family);
    var.push_back(r.variant);
    seed.push_back(r.seed);
    status.push_back(r.status);
    acc.push_back(r.accuracy);
    params.push_back(r.params);
    vt.push_back(r.visual_tokens);
    pre.push_back(r.prefill_ms);
    dec.push_back(r.decode_ms_per_token);
    step.push_back(r.train_step_ms);
    peak.push_back(r.peak_bytes);
  }
  t.add_strings("run_id", id).add_strings("family", fam).add_strings("variant", var).add_ints("seed", seed);
  t.add_strings("status", status).add_doubles("accuracy", acc).add_ints("params", params);
  t.add_ints("visual_tokens", vt).add_doubles("prefill_ms", pre).add_doubles("decode_ms_per_token", dec);
  t.add_doubles("train_step_ms", step).add_ints("peak_bytes", peak);
  t.add_strings("metric", metric).add_doubles("score", score).add_doubles("score_baseline", score_base);
  return t;
}

std::vector<SummaryRow> rows_of(const io::Table& t) {
  std::vector<SummaryRow> out;
  for (std::size_t i = 0; i < t.rows(); ++i) {
    out.push_back(SummaryRow{.run_id = t.at("run_id").strings()[i],
                             .family = t.at("family").strings()[i],
                             .variant = t.at("variant").strings()[i],
                             .status = t.at("status").strings()[i],
                             .seed = t.at("seed").ints()[i],
                             .params = t.at("params").ints()[i],
                             .visual_tokens = t.at("visual_tokens").ints()[i],
                             .peak_bytes = t.at("peak_bytes").ints()[i],
                             .accuracy = t.at("accuracy").doubles()[i],
                             .prefill_ms = t.at("prefill_ms").doubles()[i],
                             .decode_ms_per_token = t.at("decode_ms_per_token").doubles()[i],
                             .train_step_ms = t.at("train_step_ms").doubles()[i]});
    // Files from before the headline columns: the headline was exact match.
    SummaryRow& row = out.back();
    row.metric = t.has("metric") ? t.at("metric").strings()[i] : "exact_match";
    row.score = t.has("score") ? t.at("score").doubles()[i] : row.accuracy;
    row.score_baseline = t.has("score_baseline") ? t.at("score_baseline").doubles()[i] : std::nan("");
  }
  return out;
}

void write_run(io::H5File& f, const RunResult& r) {
  const std::string g = "/runs/" + r.run_id;
  f.make_groups(g);
  f.set_attr(g, "family", r.family);
  f.set_attr(g, "variant", r.variant);
  f.set_attr(g, "seed", static_cast<int64_t>(r.seed));
  f.set_attr(g, "status", r.status);
  f.set_attr(g, "error", r.error);
  f.set_attr(g, "resolved_config", r.resolved_config);
  f.set_attr(g, "sweep", r.sweep);
  f.set_attr(g, "started_utc", r.started_utc);
  f.set_attr(g, "finished_utc", r.finished_utc);
  f.set_attr(g, "wall_s", r.wall_s);
  f.set_attr(g, "threads", static_cast<int64_t>(r.threads));  // a resumed file may mix thread counts
  f.set_attr(g, "rank", static_cast<int64_t>(r.rank));        // where it ran (MPI; 0 in one process)
  f.set_attr(g, "host", r.host);
  f.set_attr(g, "cpu", r.cpu);
  f.set_attr(g, "cores", r.cores);
  // The build that made the run: a file folded from parts, or resumed with a newer build, keeps
  // each run's own, where the root's names the build that last wrote the file.
  f.set_attr(g, "git_commit", std::string(VLMLAB_GIT_COMMIT));
  f.set_attr(g, "ranks", static_cast<int64_t>(r.ranks));      // ranks that trained it (data-parallel)
  f.set_attr(g, "model_dir", r.model_dir);  // the kept model, relative to the file's folder ("" if none)
  f.set_attr(g, "resumed_from_step", static_cast<int64_t>(r.resumed_from));  // 0: trained in one go
  // The training budget in FLOPs (counted by the ops), beside the per-resolution inference cost table.
  {
    double flops = 0;
    for (const StepLog& s : r.train) flops += static_cast<double>(s.flops);
    const double per_step = r.train.empty() ? 0.0 : flops / static_cast<double>(r.train.size());
    f.set_attr(g, "train_flops_per_step", per_step);
    f.set_attr(g, "train_flops_per_sample", r.batch_size > 0 ? per_step / r.batch_size : 0.0);
  }

  {
    // The stages in order (one, "train", without [[stage]]): what each trained and froze, where its
    // initial weights came from, and the steps it took (a skipped stage: none, and why).
    io::Table t;
    std::vector<std::string> name, task, status, reason, trains, freezes, lr_scale, init;
    std::vector<int64_t> index, first, steps, trained, frozen;
    for (std::size_t k = 0; k < r.stages.size(); ++k) {
      const StageRecord& s = r.stages[k];
      index.push_back(static_cast<int64_t>(k));
      name.push_back(s.name), task.push_back(s.task), status.push_back(s.status), reason.push_back(s.reason);
      trains.push_back(s.trains), freezes.push_back(s.freezes), lr_scale.push_back(s.lr_scale), init.push_back(s.init_from);
      first.push_back(s.first_step), steps.push_back(s.steps);
      trained.push_back(s.trained_params), frozen.push_back(s.frozen_params);
    }
    t.add_ints("stage", index).add_strings("name", name).add_strings("task", task).add_strings("status", status);
    t.add_strings("reason", reason).add_ints("first_step", first).add_ints("steps", steps);
    t.add_strings("train", trains).add_strings("freeze", freezes).add_strings("lr_scale", lr_scale);
    t.add_strings("init_from", init).add_ints("trained_params", trained).add_ints("frozen_params", frozen);
    f.write_table(g + "/stages", t);
  }
  {
    io::Table t;
    t.add_strings("component", {"vision", "connector", "lm", "total"});
    t.add_ints("count", {r.params.vision, r.params.connector, r.params.lm, r.params.total()});
    f.write_table(g + "/params", t);
  }
  {
    const StepColumns c = step_columns(r.train);
    io::Table t;
    t.add_ints("step", c.step).add_ints("stage", c.stage);
    t.add_doubles("loss", c.loss).add_doubles("lr", c.lr).add_doubles("grad_norm", c.grad_norm);
    t.add_doubles("step_ms", c.step_ms);
    f.write_table(g + "/train", t);
  }
  {
    // The learning curve: one row per validation point, accuracy overall and per subtype.
    std::vector<int64_t> step, stage, samples;
    std::vector<double> flops, wall, acc;
    std::vector<std::string> subtypes;
    for (const CurvePoint& p : r.curve)
      for (const SubtypeScore& sc : p.scores)
        if (sc.subtype != "all" && std::find(subtypes.begin(), subtypes.end(), sc.subtype) == subtypes.end())
          subtypes.push_back(sc.subtype);
    std::vector<std::vector<double>> per(subtypes.size());
    for (const CurvePoint& p : r.curve) {
      step.push_back(p.step);
      stage.push_back(p.stage);
      samples.push_back(p.samples);
      flops.push_back(p.train_flops);
      wall.push_back(p.wall_s);
      acc.push_back(p.scores.empty() ? std::nan("") : p.scores.back().accuracy);
      for (std::size_t k = 0; k < subtypes.size(); ++k) {
        double a = std::nan("");
        for (const SubtypeScore& sc : p.scores)
          if (sc.subtype == subtypes[k]) a = sc.accuracy;
        per[k].push_back(a);
      }
    }
    io::Table t;
    t.add_ints("step", step).add_ints("stage", stage).add_ints("samples", samples).add_doubles("train_flops", flops);
    t.add_doubles("wall_s", wall).add_doubles("accuracy", acc);
    for (std::size_t k = 0; k < subtypes.size(); ++k) t.add_doubles("accuracy_" + subtypes[k], per[k]);
    f.write_table(g + "/curve", t);
    f.set_attr(g + "/curve", "split", std::string("validation"));
    f.set_attr(g + "/curve", "note", std::string("each point scores the validation split of its stage's task"));
    f.set_attr(g + "/curve", "threshold", r.curve_threshold);
  }
  {
    std::vector<std::string> st;
    std::vector<int64_t> n, c;
    std::vector<double> acc, chance, maj;
    for (const SubtypeScore& s : r.eval.scores) {
      st.push_back(s.subtype);
      n.push_back(s.n);
      c.push_back(s.correct);
      acc.push_back(s.accuracy);
      chance.push_back(s.chance);
      maj.push_back(s.majority);
    }
    io::Table t;
    t.add_strings("subtype", st).add_ints("n", n).add_ints("correct", c).add_doubles("accuracy", acc);
    t.add_doubles("chance", chance).add_doubles("majority", maj);
    f.write_table(g + "/eval", t);
    f.set_attr(g + "/eval", "split", r.eval.split.empty() ? std::string("test") : r.eval.split);
  }
  {
    // The task's scores beside exact match (lib/data/metrics.h), with the baseline of each.
    std::vector<std::string> st, metric, base_name;
    std::vector<int64_t> n, lower;
    std::vector<double> value, base;
    for (const data::MetricScore& m : r.eval.metrics) {
      st.push_back(m.subtype);
      metric.push_back(m.metric);
      n.push_back(m.n);
      value.push_back(m.value);
      base.push_back(m.baseline);
      base_name.push_back(m.baseline_name);
      lower.push_back(m.lower_is_better ? 1 : 0);
    }
    io::Table t;
    t.add_strings("subtype", st).add_strings("metric", metric).add_ints("n", n).add_doubles("value", value);
    t.add_doubles("baseline", base).add_strings("baseline_name", base_name).add_ints("lower_is_better", lower);
    f.write_table(g + "/metrics", t);
    f.set_attr(g + "/metrics", "headline", r.eval.headline);
  }
  if (r.keep_items) {
    // Every eval item with its prediction ([eval] keep_items = true).
    std::vector<std::string> st, q, a, p;
    std::vector<int64_t> index, ok;
    for (const EvalItem& it : r.eval.items) {
      index.push_back(it.index);
      st.push_back(it.subtype);
      q.push_back(it.question);
      a.push_back(it.answer);
      p.push_back(it.prediction);
      ok.push_back(it.correct ? 1 : 0);
    }
    io::Table t;
    t.add_ints("index", index).add_strings("subtype", st).add_strings("question", q).add_strings("answer", a);
    t.add_strings("prediction", p).add_ints("correct", ok);
    f.write_table(g + "/items", t);
  }
  {
    std::vector<std::string> phase;
    std::vector<int64_t> res, reps;
    std::vector<double> med, p10, p90;
    for (const LatencyRow& l : r.latency) {
      phase.push_back(l.phase);
      res.push_back(l.resolution);
      med.push_back(median(l.samples_ms));
      p10.push_back(percentile(l.samples_ms, 10));
      p90.push_back(percentile(l.samples_ms, 90));
      reps.push_back(static_cast<int64_t>(l.samples_ms.size()));
      std::ostringstream name;
      name << g << "/latency_samples/" << l.phase << '@' << l.resolution;
      f.write_doubles(name.str(), l.samples_ms);
    }
    io::Table t;
    t.add_strings("phase", phase).add_ints("resolution", res).add_doubles("median_ms", med);
    t.add_doubles("p10_ms", p10).add_doubles("p90_ms", p90).add_ints("repeats", reps);
    f.write_table(g + "/latency", t);
  }
  {
    std::vector<std::string> phase;
    std::vector<int64_t> pb, gb, ob, ab, kb, peak, rss;
    for (const MemoryRow& m : r.memory) {
      phase.push_back(m.phase);
      pb.push_back(m.params);
      gb.push_back(m.grads);
      ob.push_back(m.optimizer);
      ab.push_back(m.activations);
      kb.push_back(m.kv_cache);
      peak.push_back(m.peak);
      rss.push_back(m.peak_rss);
    }
    io::Table t;
    t.add_strings("phase", phase).add_ints("params_bytes", pb).add_ints("grads_bytes", gb);
    t.add_ints("optimizer_bytes", ob).add_ints("activations_bytes", ab).add_ints("kv_cache_bytes", kb);
    t.add_ints("peak_bytes", peak).add_ints("peak_rss_bytes", rss);
    f.write_table(g + "/memory", t);
  }
  {
    std::vector<int64_t> res, vt, lt, pf, df;
    for (const CostRow& c : r.cost) {
      res.push_back(c.resolution);
      vt.push_back(c.visual_tokens);
      lt.push_back(c.lm_tokens);
      pf.push_back(c.prefill_flops);
      df.push_back(c.decode_flops_per_token);
    }
    io::Table t;
    t.add_ints("resolution", res).add_ints("visual_tokens", vt).add_ints("lm_tokens", lt);
    t.add_ints("prefill_flops", pf).add_ints("decode_flops_per_token", df);
    f.write_table(g + "/cost", t);
  }
  {
    // The gallery: `eval.gallery` items spread evenly over the eval set (item k of n is eval item
    // k * total / n), so a task asking many questions about one image (Sort-of-CLEVR: 20) still shows
    // several images; `index` names each item's eval index, from which `vlmlab sample` redraws it.
    const auto& items = r.eval.items;
    std::vector<std::string> q, a, p;
    std::vector<int64_t> ok, index;
    const std::size_t n = std::min<std::size_t>(items.size(), static_cast<std::size_t>(std::max(0, r.gallery)));
    for (std::size_t k = 0; k < n; ++k) {
      const EvalItem& it = items[k * items.size() / n];
      q.push_back(it.question);
      a.push_back(it.answer);
      p.push_back(it.prediction);
      ok.push_back(it.correct ? 1 : 0);
      index.push_back(it.index);
    }
    io::Table t;
    t.add_strings("question", q).add_strings("answer", a).add_strings("prediction", p).add_ints("correct", ok);
    t.add_ints("index", index);
    f.write_table(g + "/samples", t);
  }
}

}  // namespace

std::string progress_dir(const std::string& results_path) { return artifacts_dir(results_path) + "/progress"; }

std::string progress_path(const std::string& results_path, const std::string& run_id) {
  return progress_dir(results_path) + "/" + run_id + ".h5";
}

void write_progress(const std::string& path, const std::string& experiment_name, const RunResult& partial,
                    int steps) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  io::write_atomically(path, [&](io::H5File& f) {
    f.set_attr("/", "schema_version", kSchemaVersion);
    f.set_attr("/", "experiment_name", experiment_name);
    f.set_attr("/", "run_id", partial.run_id);
    f.set_attr("/", "steps_done", static_cast<int64_t>(partial.train.size()));
    f.set_attr("/", "steps", static_cast<int64_t>(steps));
    f.set_attr("/", "written_utc", utc_now());
    write_run(f, partial);
  });
}

ResultsFile::ResultsFile(std::string path, const LoadedExperiment& exp, int threads)
    : path_(std::move(path)),
      exp_(exp),
      threads_(threads),
      created_utc_(utc_now()),
      cpu_(cpu_model()),
      blas_(blas_config()),
      compiler_(compiler_version()) {}

void ResultsFile::load_existing() {
  const io::H5File f = io::H5File::open_read(path_);
  const auto text = std::get<std::string>(f.attr("/", "experiment_toml"));
  if (text != exp_.toml_text)
    throw ConfigError(path_ + " was written from a different version of " + exp_.base.file +
                      "; resuming would mix two experiments (use --overwrite to start over)");
  rows_ = rows_of(f.read_table("/summary"));
  created_utc_ = std::get<std::string>(f.attr("/", "created_utc"));
  have_file_ = true;
}

bool ResultsFile::is_complete(const std::string& run_id) const {
  return std::any_of(rows_.begin(), rows_.end(),
                     [&](const SummaryRow& r) { return r.run_id == run_id && r.status == "complete"; });
}

void ResultsFile::add(const RunResult& r) { rewrite(&r); }

void ResultsFile::add_nothing() {
  if (!have_file_) rewrite(nullptr);
}

std::vector<std::string> ResultsFile::run_ids() const {
  std::vector<std::string> out;
  for (const SummaryRow& r : rows_) out.push_back(r.run_id);
  return out;
}

int ResultsFile::fold(const std::vector<std::string>& parts) {
  std::vector<io::H5File> open;
  open.reserve(parts.size());  // `from` points into it
  std::map<std::string, const io::H5File*> from;
  std::vector<SummaryRow> rows = rows_;
  for (const std::string& part : parts) {
    io::H5File f = io::H5File::open_read(part);
    if (std::get<std::string>(f.attr("/", "experiment_toml")) != exp_.toml_text)
      throw ConfigError(part + " (a rank's part of " + path_ + ") was written from a different version of " +
                        exp_.base.file + "; remove it, or use --overwrite to start over");
    for (const SummaryRow& row : rows_of(f.read_table("/summary"))) {
      const auto old = std::find_if(rows.begin(), rows.end(), [&](const SummaryRow& x) { return x.run_id == row.run_id; });
      if (old != rows.end() && (old->status == "complete" || row.status != "complete")) continue;
      if (old != rows.end()) rows.erase(old);
      rows.push_back(row);
      from[row.run_id] = nullptr;  // set below, once `open` no longer moves
    }
    open.push_back(std::move(f));
    for (auto& [id, src] : from)
      if (!src) src = &open.back();
  }
  if (from.empty()) return 0;
  write(std::move(rows), nullptr, from);
  return static_cast<int>(from.size());
}

void ResultsFile::put_in_order(const std::vector<std::string>& order) {
  std::map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < order.size(); ++i) pos.emplace(order[i], i);
  std::vector<SummaryRow> rows = rows_;
  std::stable_sort(rows.begin(), rows.end(), [&](const SummaryRow& a, const SummaryRow& b) {
    const auto pa = pos.count(a.run_id) ? pos[a.run_id] : order.size();
    const auto pb = pos.count(b.run_id) ? pos[b.run_id] : order.size();
    return pa < pb;
  });
  bool same = true;
  for (std::size_t i = 0; i < rows.size(); ++i) same = same && rows[i].run_id == rows_[i].run_id;
  if (!same) write(std::move(rows), nullptr, {});
}

void ResultsFile::rewrite(const RunResult* r) {
  std::vector<SummaryRow> rows = rows_;
  if (r) {
    rows.erase(std::remove_if(rows.begin(), rows.end(), [&](const SummaryRow& s) { return s.run_id == r->run_id; }),
               rows.end());
    rows.push_back(summary_of(*r));
  }
  write(std::move(rows), r, {});
}

void ResultsFile::write(std::vector<SummaryRow> rows, const RunResult* r,
                        const std::map<std::string, const io::H5File*>& from) {
  io::write_atomically(path_, [&](io::H5File& f) {
    f.set_attr("/", "schema_version", kSchemaVersion);
    f.set_attr("/", "vlmlab_version", std::string(VLMLAB_VERSION));
    f.set_attr("/", "git_commit", std::string(VLMLAB_GIT_COMMIT));
    f.set_attr("/", "created_utc", created_utc_);
    f.set_attr("/", "cpu", cpu_);
    f.set_attr("/", "cores", static_cast<int64_t>(std::thread::hardware_concurrency()));
    f.set_attr("/", "threads", static_cast<int64_t>(threads_));
    f.set_attr("/", "blas", blas_);
    f.set_attr("/", "compiler", compiler_);
    f.set_attr("/", "experiment_name", exp_.base.name);
    f.set_attr("/", "experiment_toml", exp_.toml_text);
    f.make_groups("/runs");
    std::optional<io::H5File> old;
    if (have_file_) old = io::H5File::open_read(path_);
    for (const SummaryRow& s : rows) {
      if (r && s.run_id == r->run_id) continue;
      const std::string g = "/runs/" + s.run_id;
      if (const auto it = from.find(s.run_id); it != from.end()) f.copy_from(*it->second, g, g);
      else if (old) f.copy_from(*old, g, g);
    }
    if (r) write_run(f, *r);
    f.write_table("/summary", summary_table(rows));
    f.set_attr("/summary", "accuracy_split", std::string("test"));
  });
  rows_ = std::move(rows);
  have_file_ = true;
}

namespace {

bool all_digits(const std::string& x) {
  return !x.empty() && std::all_of(x.begin(), x.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

ResultsLock::ResultsLock(const std::string& path) {
  const std::string lock = path + ".lock";
  fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot lock " + path + ": cannot open " + lock + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[64] = {0};
    const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      std::string pid = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : std::string("?");
      pid.erase(std::remove_if(pid.begin(), pid.end(), [](char c) { return !std::isdigit(static_cast<unsigned char>(c)); }),
                pid.end());
      throw ConfigError(path + " is being written by another vlmlab (pid " + (pid.empty() ? "?" : pid) +
                        ", holding " + lock + "): wait for it to finish, or pass another --out");
    }
    throw Error("cannot lock " + lock + ": " + std::strerror(err));
  }
  // Our pid, for the message a second writer gets (informational: the lock is what counts).
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] const ssize_t w = ::pwrite(fd_, me.data(), me.size(), 0);
  }
}

ResultsLock::~ResultsLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

void remove_stale_temps(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string name = p.filename().string();
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f == name + ".tmp") {
      fs::remove(e.path(), ec);
      continue;
    }
    // NAME.<digits>.<digits>.tmp: write_file_atomically's temporaries (io::temp_path_beside).
    if (f.size() <= name.size() + 5 || f.compare(0, name.size() + 1, name + ".") != 0 ||
        f.compare(f.size() - 4, 4, ".tmp") != 0)
      continue;
    const std::string mid = f.substr(name.size() + 1, f.size() - name.size() - 5);
    const std::size_t dot = mid.find('.');
    if (dot != std::string::npos && all_digits(mid.substr(0, dot)) && all_digits(mid.substr(dot + 1)))
      fs::remove(e.path(), ec);
  }
}

std::string part_path(const std::string& path, int rank) { return path + ".part" + std::to_string(rank); }

namespace {

// PATH.partR files (with_tmp: and the PATH.partR.tmp a writer killed mid-write leaves).
std::vector<std::string> parts_beside(const std::string& path, bool with_tmp) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string prefix = p.filename().string() + ".part";
  std::vector<std::string> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string digits = name.substr(prefix.size());
    // A killed writer's temporary: PATH.partR.<pid>.<n>.tmp (PATH.partR.tmp from older versions).
    if (with_tmp && digits.size() > 4 && digits.compare(digits.size() - 4, 4, ".tmp") == 0) {
      digits.resize(digits.size() - 4);
      for (int k = 0; k < 2 && digits.find('.') != std::string::npos; ++k) {
        const std::size_t dot = digits.rfind('.');
        const std::string tail = digits.substr(dot + 1);
        if (!all_digits(tail)) break;
        digits.resize(dot);
      }
    }
    if (digits.empty() || all_digits(digits))
      out.push_back((p.has_parent_path() ? (dir / name) : fs::path(name)).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<std::string> part_files(const std::string& path) { return parts_beside(path, false); }

void remove_part_files(const std::string& path) {
  for (const std::string& p : parts_beside(path, true)) std::filesystem::remove(p);
}

}  // namespace vlm::exp
