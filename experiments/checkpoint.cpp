#include "experiments/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lib/core/check.h"
#include "lib/core/memory.h"
#include "lib/io/durable.h"
#include "lib/io/safetensors.h"

namespace vlm::exp {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "vlmlab-checkpoint-2";  // 2: stages (log/stage, curve stage)

std::string step_file(int step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%09d.ckpt", step);
  return buf;
}

io::RawTensor raw_of(const Tensor& t) {
  return io::raw_f32(t.shape(), std::span<const float>(t.data(), static_cast<std::size_t>(t.numel())));
}

void copy_into(Tensor& dst, const io::Safetensors& st, const std::string& name) {
  VLM_CHECK(st.contains(name), st.source << ": " << name << " is missing");
  const io::RawTensor& raw = st.at(name);
  VLM_CHECK(raw.dtype == io::DType::F32 && raw.shape == dst.shape(),
            st.source << ": " << name << " has shape " << shape_str(raw.shape) << ", the model's is "
                      << shape_str(dst.shape()));
  const std::vector<float> v = st.to_f32(name);
  std::copy(v.begin(), v.end(), dst.data());
}

nlohmann::json scores_json(const std::vector<SubtypeScore>& scores) {
  nlohmann::json out = nlohmann::json::array();
  for (const SubtypeScore& s : scores)
    out.push_back({{"subtype", s.subtype},
                   {"n", s.n},
                   {"correct", s.correct},
                   {"accuracy", s.accuracy},
                   {"chance", s.chance},
                   {"majority", s.majority}});
  return out;
}

std::vector<SubtypeScore> scores_of(const nlohmann::json& j) {
  std::vector<SubtypeScore> out;
  for (const nlohmann::json& s : j)
    out.push_back(SubtypeScore{.subtype = s.at("subtype").get<std::string>(),
                               .n = s.at("n").get<int64_t>(),
                               .correct = s.at("correct").get<int64_t>(),
                               .accuracy = s.at("accuracy").get<double>(),
                               .chance = s.at("chance").get<double>(),
                               .majority = s.at("majority").get<double>()});
  return out;
}

}  // namespace

std::string artifacts_dir(const std::string& results_path) {
  const fs::path p(results_path);
  return (p.parent_path() / p.stem()).string();
}

std::string model_dir(const std::string& results_path, const std::string& run_id) {
  return (fs::path(artifacts_dir(results_path)) / "models" / run_id).string();
}

std::string model_dir_relative(const std::string& results_path, const std::string& run_id) {
  return (fs::path(results_path).stem() / "models" / run_id).string();
}

bool has_checkpoints(const std::string& results_path) {
  const fs::path dir = fs::path(artifacts_dir(results_path)) / "checkpoints";
  std::error_code ec;
  for (const fs::directory_entry& run : fs::directory_iterator(dir, ec))
    for (const fs::directory_entry& f : fs::directory_iterator(run.path(), ec))
      if (f.path().extension() == ".ckpt") return true;
  return false;
}

void remove_artifacts(const std::string& results_path) {
  const fs::path dir(artifacts_dir(results_path));
  fs::remove_all(dir / "checkpoints");
  fs::remove_all(dir / "models");
}

CheckpointStore::CheckpointStore(const std::string& results_path, std::string run_id, std::string experiment_toml,
                                 std::string resolved_toml, int keep)
    : dir_((fs::path(artifacts_dir(results_path)) / "checkpoints" / run_id).string()),
      run_id_(std::move(run_id)),
      experiment_toml_(std::move(experiment_toml)),
      resolved_toml_(std::move(resolved_toml)),
      keep_(std::max(1, keep)) {}

std::vector<std::pair<int, std::string>> CheckpointStore::list() const {
  std::vector<std::pair<int, std::string>> out;
  std::error_code ec;
  for (const fs::directory_entry& f : fs::directory_iterator(dir_, ec)) {
    const std::string name = f.path().filename().string();
    // step-<digits>.ckpt only: a writer's temporary (….ckpt.<pid>.<n>.tmp) is never a checkpoint.
    if (name.size() != 19 || name.rfind("step-", 0) != 0 || f.path().extension() != ".ckpt") continue;
    const std::string digits = name.substr(5, 9);
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    out.emplace_back(std::stoi(digits), f.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void CheckpointStore::save(Vlm& vlm, const TrainState& state, const nlohmann::json& extra) const {
  fs::create_directories(dir_);
  std::map<std::string, io::RawTensor> tensors;
  const auto params = named_parameters(vlm.model());
  VLM_CHECK(state.optimizer.size() == params.size(),
            "checkpoint: optimizer state for " << state.optimizer.size() << " of " << params.size() << " parameters");
  nlohmann::json adam_steps = nlohmann::json::array();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [name, t] = params[i];
    tensors.emplace("param/" + name, raw_of(t));
    const auto& s = state.optimizer[i];
    adam_steps.push_back(s.step);
    if (s.exp_avg.defined()) {
      tensors.emplace("adam_m/" + name, raw_of(s.exp_avg));
      tensors.emplace("adam_v/" + name, raw_of(s.exp_avg_sq));
    }
  }
  // The step log, column by column, in binary: bit for bit what the uninterrupted run would record.
  const StepColumns c = step_columns(state.log);
  const int64_t n = static_cast<int64_t>(state.log.size());
  tensors.emplace("log/step", io::raw_i64({n}, c.step));
  tensors.emplace("log/stage", io::raw_i64({n}, c.stage));
  tensors.emplace("log/flops", io::raw_i64({n}, c.flops));
  tensors.emplace("log/loss", io::raw_f64({n}, c.loss));
  tensors.emplace("log/lr", io::raw_f64({n}, c.lr));
  tensors.emplace("log/grad_norm", io::raw_f64({n}, c.grad_norm));
  tensors.emplace("log/step_ms", io::raw_f64({n}, c.step_ms));
  nlohmann::json curve = nlohmann::json::array();
  for (const CurvePoint& p : state.curve)
    curve.push_back({{"step", p.step},
                     {"stage", p.stage},
                     {"samples", p.samples},
                     {"train_flops", p.train_flops},
                     {"wall_s", p.wall_s},
                     {"scores", scores_json(p.scores)}});
  const nlohmann::json meta = {{"format", kFormat},
                               {"run_id", run_id_},
                               {"steps_done", state.steps_done},
                               {"wall_s", state.wall_s},
                               {"adam_steps", adam_steps},
                               {"curve", curve},
                               {"extra", extra}};
  const std::string path = (fs::path(dir_) / step_file(state.steps_done)).string();
  io::write_file_atomically(path,
                            io::serialize_safetensors(tensors, {{"vlmlab_checkpoint", meta.dump()},
                                                                {"experiment_toml", experiment_toml_},
                                                                {"resolved_toml", resolved_toml_}}),
                            "checkpoint-write:" + std::to_string(state.steps_done));
  const auto all = list();
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep_) < all.size(); ++i) fs::remove(all[i].second);
}

std::string CheckpointStore::latest() const {
  const auto all = list();
  return all.empty() ? std::string() : all.back().second;
}

void CheckpointStore::check_belongs(const io::Safetensors& st, const std::string& path) const {
  const auto exp_it = st.metadata.find("experiment_toml"), run_it = st.metadata.find("resolved_toml");
  if (exp_it == st.metadata.end() || exp_it->second != experiment_toml_ || run_it == st.metadata.end() ||
      run_it->second != resolved_toml_)
    throw ConfigError(path + " was written from a different version of the experiment; resuming would mix two "
                             "configs (use --overwrite to start over)");
}

void CheckpointStore::check_belongs(const std::string& path) const { check_belongs(io::read_safetensors(path), path); }

TrainState CheckpointStore::load(Vlm& vlm, const std::string& path, nlohmann::json* extra) const {
  const io::Safetensors st = io::read_safetensors(path);
  const auto meta_it = st.metadata.find("vlmlab_checkpoint");
  VLM_CHECK(meta_it != st.metadata.end(), path << ": not a vlmlab checkpoint (no vlmlab_checkpoint metadata)");
  check_belongs(st, path);
  TrainState state;
  try {
    const nlohmann::json meta = nlohmann::json::parse(meta_it->second);
    VLM_CHECK(meta.at("format") == kFormat, path << ": checkpoint format " << meta.at("format").dump());
    state.steps_done = meta.at("steps_done").get<int>();
    state.wall_s = meta.at("wall_s").get<double>();
    if (extra) *extra = meta.value("extra", nlohmann::json::object());
    for (const nlohmann::json& p : meta.at("curve"))
      state.curve.push_back(CurvePoint{.step = p.at("step").get<int>(),
                                       .stage = p.at("stage").get<int>(),
                                       .samples = p.at("samples").get<int64_t>(),
                                       .train_flops = p.at("train_flops").get<double>(),
                                       .wall_s = p.at("wall_s").get<double>(),
                                       .scores = scores_of(p.at("scores"))});
    auto params = named_parameters(vlm.model());
    const nlohmann::json& adam_steps = meta.at("adam_steps");
    VLM_CHECK(adam_steps.size() == params.size(),
              path << ": optimizer state for " << adam_steps.size() << " parameters, the model has " << params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto& [name, t] = params[i];
      copy_into(t, st, "param/" + name);
      AdamW<float>::ParamState s;
      s.step = adam_steps[i].get<int64_t>();
      if (st.contains("adam_m/" + name)) {
        MemCatScope scope(MemCat::kOptimizer);  // the optimizer adopts them (AdamW::set_state)
        s.exp_avg = Tensor::zeros(t.shape());
        s.exp_avg_sq = Tensor::zeros(t.shape());
        copy_into(s.exp_avg, st, "adam_m/" + name);
        copy_into(s.exp_avg_sq, st, "adam_v/" + name);
      }
      state.optimizer.push_back(std::move(s));
    }
    const std::vector<int64_t> step = st.to_i64("log/step"), stage = st.to_i64("log/stage"),
                               flops = st.to_i64("log/flops");
    const std::vector<double> loss = st.to_f64("log/loss"), lr = st.to_f64("log/lr"), gn = st.to_f64("log/grad_norm"),
                              ms = st.to_f64("log/step_ms");
    VLM_CHECK(step.size() == static_cast<std::size_t>(state.steps_done) && flops.size() == step.size() &&
                  stage.size() == step.size() && loss.size() == step.size() && lr.size() == step.size() && gn.size() == step.size() &&
                  ms.size() == step.size(),
              path << ": the step log does not hold " << state.steps_done << " steps");
    for (std::size_t i = 0; i < step.size(); ++i)
      state.log.push_back(StepLog{.step = static_cast<int>(step[i]),
                                  .stage = static_cast<int>(stage[i]),
                                  .loss = loss[i],
                                  .lr = lr[i],
                                  .grad_norm = gn[i],
                                  .step_ms = ms[i],
                                  .flops = flops[i]});
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": unreadable checkpoint state: " + e.what());
  }
  return state;
}

void CheckpointStore::remove_all() const {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

}  // namespace vlm::exp
