#include "architectures/budget.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <variant>

namespace vlm {

namespace {

std::atomic<int64_t> g_budget_override{0};

double machine_memory_bytes() {
  double bytes = std::numeric_limits<double>::infinity();
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) bytes = static_cast<double>(pages) * static_cast<double>(page);
  for (const int res : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit lim{};
    if (::getrlimit(res, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
      bytes = std::min(bytes, static_cast<double>(lim.rlim_cur));
  }
  std::ifstream cg("/sys/fs/cgroup/memory.max");  // cgroup v2; "max" when unlimited
  std::string text;
  if (cg >> text && text != "max") {
    try {
      bytes = std::min(bytes, std::stod(text));
    } catch (const std::exception&) {
    }
  }
  return bytes;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string count_str(double n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", n);
  return buf;
}

std::string value_str(double v) {
  std::ostringstream os;
  os.precision(15);
  os << v;
  return os.str();
}

SizeKey key(const io::HfConfig& c, const std::string& k, double value) { return {c.key_path(k), c.has(k), value}; }

}  // namespace

void set_memory_budget(int64_t bytes) { g_budget_override = std::max<int64_t>(bytes, 0); }

int64_t memory_budget_bytes() {
  if (const int64_t b = g_budget_override; b > 0) return b;
  const double half = machine_memory_bytes() / 2;
  return half >= 9.0e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(half);
}

void check_param_budget(const io::HfConfig& cfg, const std::vector<ModelPart>& parts) {
  double total = 0;
  const ModelPart* largest = nullptr;
  double largest_n = -1;
  for (const ModelPart& p : parts) {
    std::vector<double> v;
    for (const SizeKey& k : p.keys) v.push_back(k.value);
    const double n = p.count(v);
    total += n;
    if (n > largest_n) largest_n = n, largest = &p;
  }
  const double bytes = 4.0 * total, budget = static_cast<double>(memory_budget_bytes());
  if (bytes <= budget || largest == nullptr) return;
  // The key whose reduction to 1 removes the most parameters drives the size.
  std::vector<double> v;
  for (const SizeKey& k : largest->keys) v.push_back(k.value);
  std::size_t driver = 0;
  double best = -1;
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::vector<double> w = v;
    w[i] = 1;
    const double removed = largest_n - largest->count(w);
    if (removed > best) best = removed, driver = i;
  }
  const SizeKey& d = largest->keys[driver];
  std::string sizes;
  for (const SizeKey& k : largest->keys)
    sizes += (sizes.empty() ? "" : ", ") + k.path + " " + value_str(k.value) + (k.set ? "" : " (default)");
  // cfg.fail prefixes cfg's own path: the driver's path is already full, so name it from the top.
  throw ConfigError(cfg.source() + ": " + d.path + ": " + value_str(d.value) +
                    (d.set ? "" : " (HF's default: the file does not set it)") + " makes a model of " +
                    count_str(total) + " parameters (" + gib(bytes) + " as float32), more than the memory budget of " +
                    gib(budget) + "; its " + largest->name + " alone has " + count_str(largest_n) + " (" + sizes + ")");
}

ModelPart lm_part(const DecoderLmConfig& lm, const io::HfConfig& c) {
  const AttentionConfig& a = lm.block.attn;
  const double D = static_cast<double>(a.hidden_size);
  const double H = static_cast<double>(a.num_heads), KV = static_cast<double>(a.num_kv_heads ? a.num_kv_heads : a.num_heads);
  const double hd = static_cast<double>(a.head_dim ? a.head_dim : (a.num_heads ? a.hidden_size / a.num_heads : 0));
  // q and o are D x H*hd, k and v D x KV*hd: as multiples of D^2, so they scale with hidden_size.
  const double attn_per_d2 = D > 0 ? (2 * H * hd + 2 * KV * hd) / D : 4.0;
  const bool gated = std::holds_alternative<GatedMlpConfig>(lm.block.mlp);
  const double I = static_cast<double>(
      std::visit([](const auto& m) { return m.intermediate_size; }, lm.block.mlp));
  const double heads = lm.tie_word_embeddings ? 1.0 : 2.0;
  return ModelPart{
      "language model",
      {key(c, "vocab_size", static_cast<double>(lm.vocab_size)), key(c, "hidden_size", D),
       key(c, "num_hidden_layers", lm.num_layers), key(c, "intermediate_size", I)},
      [=](const std::vector<double>& x) {
        return heads * x[0] * x[1] + x[2] * (attn_per_d2 * x[1] * x[1] + (gated ? 3.0 : 2.0) * x[1] * x[3]);
      }};
}

ModelPart clip_part(const ClipVisionConfig& v, const io::HfConfig& c) {
  const double C = static_cast<double>(v.num_channels);
  return ModelPart{"vision tower",
                   {key(c, "hidden_size", static_cast<double>(v.hidden_size)), key(c, "num_hidden_layers", v.num_layers),
                    key(c, "intermediate_size", static_cast<double>(v.intermediate_size)),
                    key(c, "image_size", static_cast<double>(v.image_size)),
                    key(c, "patch_size", static_cast<double>(v.patch_size))},
                   [=](const std::vector<double>& x) {
                     const double grid = std::floor(x[3] / std::max(x[4], 1.0));
                     return x[1] * (4 * x[0] * x[0] + 2 * x[0] * x[2]) + C * x[4] * x[4] * x[0] + (grid * grid + 1) * x[0];
                   }};
}

}  // namespace vlm
