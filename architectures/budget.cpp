#include "architectures/budget.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
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

// Bytes in the largest binary unit that keeps a digit before the point: "3.8 GiB", "512.0 KiB".
std::string size_str(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  std::size_t u = 0;
  while (u + 1 < std::size(units) && bytes >= 1024.0) bytes /= 1024.0, ++u;
  char buf[40];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
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

namespace {

double total_params(const std::vector<ModelPart>& parts, const ModelPart** largest, double* largest_n) {
  double total = 0;
  *largest = nullptr;
  *largest_n = -1;
  for (const ModelPart& p : parts) {
    std::vector<double> v;
    for (const SizeKey& k : p.keys) v.push_back(k.value);
    const double n = p.count(v);
    total += n;
    if (n > *largest_n) *largest_n = n, *largest = &p;
  }
  return total;
}

// `copies` float32 copies of the parameters (1: the weights; 4: training with AdamW) plus `extra`
// bytes must fit; otherwise the size key that drives the weights is named.
void check_params(const io::HfConfig& cfg, const std::vector<ModelPart>& parts, double copies, const std::string& use) {
  const ModelPart* largest = nullptr;
  double largest_n = -1;
  const double total = total_params(parts, &largest, &largest_n);
  const double bytes = 4.0 * copies * total, budget = static_cast<double>(memory_budget_bytes());
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
  const std::string as = copies == 1 ? " as float32" : " for " + use + ": weights, gradients and AdamW's two moments";
  const auto show = copies == 1 ? &gib : &size_str;  // GiB as before for the weights alone
  // cfg.fail prefixes cfg's own path: the driver's path is already full, so name it from the top.
  throw ConfigError(cfg.source() + ": " + d.path + ": " + value_str(d.value) +
                    (d.set ? "" : " (HF's default: the file does not set it)") + " makes a model of " +
                    count_str(total) + " parameters (" + show(bytes) + as + "), more than the memory budget of " +
                    show(budget) + "; its " + largest->name + " alone has " + count_str(largest_n) + " (" + sizes + ")");
}

}  // namespace

void check_param_budget(const io::HfConfig& cfg, const std::vector<ModelPart>& parts) {
  check_params(cfg, parts, 1.0, "");
}

// The activation estimate. Per part that runs over a sequence of S positions (batch B, width D,
// L layers, H heads), in float32:
//   training:  B x L x (24 x S x D + H x S^2): every layer keeps about 24 rows of width D per
//              position for backward (norms, q/k/v/o, residuals, a 4D-wide MLP's input, activation
//              and output) and its attention probabilities [H, S, S];
//   inference: B x S x (16 + 2 x L) x D: one layer's live rows at a time plus the KV cache (the
//              attention of a long prefill runs online, without S^2 scores).
// Images: per raw pixel 15 bytes (RGB and its float copy), per pixel the model sees 24 (resized and
// normalised float copies). These are estimates, meant to refuse sizes that cannot fit (by orders of
// magnitude) before anything is allocated, not to predict the peak.
double workload_bytes(const std::vector<ModelPart>& parts, const Workload& w) {
  double bytes = 0;
  const double lm_seq = w.text_tokens + w.images * w.lm_tokens, vision_seq = w.images * w.visual_tokens;
  for (const ModelPart& p : parts) {
    if (p.seq == ModelPart::Seq::kNone) continue;
    const double S = p.seq == ModelPart::Seq::kText ? lm_seq
                     : p.image_seq > 0              ? w.images * p.image_seq
                                                    : vision_seq * p.seq_scale;
    const double per_sample = w.training ? p.layers * (24 * S * p.width + p.heads * S * S)
                                         : S * (16 + 2 * p.layers) * p.width;
    bytes += 4 * w.batch * per_sample;
  }
  bytes += w.batch * w.images * (15 * w.image_height * w.image_width + 24 * w.seen_height * w.seen_width);
  return bytes;
}

void check_memory_budget(const io::HfConfig& cfg, const std::vector<ModelPart>& parts,
                         const std::vector<Workload>& uses) {
  check_params(cfg, parts, 1.0, "");
  const ModelPart* largest = nullptr;
  double largest_n = -1;
  const double weights = 4.0 * total_params(parts, &largest, &largest_n);
  const double budget = static_cast<double>(memory_budget_bytes());
  for (const Workload& w : uses) {
    const double copies = w.training ? 4.0 : 1.0;
    check_params(cfg, parts, copies, w.what);
    const double act = workload_bytes(parts, w);
    if (copies * weights + act <= budget) continue;
    // Images dominate when the estimate without them is less than half of it; then a tower that
    // sees a fixed size (CLIP's image_size, whatever the raw image) names that size's key when it
    // takes most, else the raw image's.
    Workload text_only = w;
    text_only.images = 0;
    std::string head = w.key + ": " + w.value + " (" + w.what + ")";
    if (!w.image_key.empty() && 2 * workload_bytes(parts, text_only) < act) {
      head = w.image_key + ": images of " + value_str(w.image_height) + " x " + value_str(w.image_width) + " pixels (" +
             w.what + ")";
      for (const ModelPart& p : parts)
        if (p.image_seq > 0 && !w.fixed_image_key.empty() && 2 * workload_bytes({p}, w) > act)
          head = w.fixed_image_key + ": " + value_str(p.image_seq) + " positions per image in the " + p.name + " (" +
                 w.what + ")";
    }
    throw ConfigError(head + " needs an estimated " + size_str(copies * weights + act) + " (" +
                      (w.training ? "weights, gradients and AdamW's two moments " : "weights ") +
                      size_str(copies * weights) + ", activations and images " + size_str(act) +
                      "), more than the memory budget of " + size_str(budget));
  }
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
  ModelPart part{
      "language model",
      {key(c, "vocab_size", static_cast<double>(lm.vocab_size)), key(c, "hidden_size", D),
       key(c, "num_hidden_layers", lm.num_layers), key(c, "intermediate_size", I)},
      [=](const std::vector<double>& x) {
        return heads * x[0] * x[1] + x[2] * (attn_per_d2 * x[1] * x[1] + (gated ? 3.0 : 2.0) * x[1] * x[3]);
      }};
  part.seq = ModelPart::Seq::kText;
  part.width = D, part.layers = lm.num_layers, part.heads = H;
  return part;
}

ModelPart clip_part(const ClipVisionConfig& v, const io::HfConfig& c) {
  const double C = static_cast<double>(v.num_channels);
  ModelPart part{"vision tower",
                   {key(c, "hidden_size", static_cast<double>(v.hidden_size)), key(c, "num_hidden_layers", v.num_layers),
                    key(c, "intermediate_size", static_cast<double>(v.intermediate_size)),
                    key(c, "image_size", static_cast<double>(v.image_size)),
                    key(c, "patch_size", static_cast<double>(v.patch_size))},
                   [=](const std::vector<double>& x) {
                     const double grid = std::floor(x[3] / std::max(x[4], 1.0));
                     return x[1] * (4 * x[0] * x[0] + 2 * x[0] * x[2]) + C * x[4] * x[4] * x[0] + (grid * grid + 1) * x[0];
                   }};
  // The processor resizes every image to image_size: the tower always sees grid^2 patches and CLS.
  const double grid = std::floor(static_cast<double>(v.image_size) / std::max(static_cast<double>(v.patch_size), 1.0));
  part.seq = ModelPart::Seq::kVision;
  part.width = static_cast<double>(v.hidden_size), part.layers = v.num_layers;
  part.heads = static_cast<double>(v.num_heads), part.image_seq = grid * grid + 1;
  return part;
}

}  // namespace vlm
