#include "architectures/processor_util.h"

#include <algorithm>
#include <sstream>

#include "lib/data/resize.h"
#include "lib/core/suggest.h"

namespace vlm {

std::vector<double> channel_values(const io::HfConfig& o, const std::string& key, const std::array<double, 3>& fallback) {
  if (!o.has(key)) return {fallback.begin(), fallback.end()};
  const nlohmann::json& v = o.json().at(key);
  if (v.is_number()) return std::vector<double>(3, v.get<double>());
  if (!v.is_array() || v.size() != 3 || !std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_number(); }))
    o.fail(key, "expected a number or a list of 3 numbers (one per RGB channel), got " + io::short_dump(v));
  return {v[0].get<double>(), v[1].get<double>(), v[2].get<double>()};
}

io::HfConfig processor_options(const nlohmann::json& options, const std::string& family,
                               const std::vector<std::string>& known) {
  if (!options.is_null() && !options.is_object())
    throw io::ConfigError(family + " processor options: expected a JSON object, got " + io::short_dump(options));
  const io::HfConfig o(options.is_null() ? nlohmann::json::object() : options, family + " processor options");
  for (const auto& [key, value] : o.json().items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::ostringstream os;
    os << "unknown option (known: ";
    for (std::size_t i = 0; i < known.size(); ++i) os << (i ? ", " : "") << known[i];
    os << ')' << did_you_mean(key, known);
    o.fail(key, os.str());
  }
  return o;
}

Normalization read_normalization(const io::HfConfig& o, const std::array<double, 3>& mean,
                                 const std::array<double, 3>& std) {
  Normalization n;
  n.rescale_factor = o.get_double("rescale_factor", n.rescale_factor);
  if (!(n.rescale_factor > 0.0)) o.fail("rescale_factor", "must be positive");
  n.mean = channel_values(o, "image_mean", mean);
  n.std = channel_values(o, "image_std", std);
  for (const double s : n.std)
    if (s == 0.0) o.fail("image_std", "must not be 0");
  return n;
}

Tensor normalize_chw(const Tensor& image, const Normalization& n) {
  return data::rescale_normalize_chw(image, n.rescale_factor, n.mean, n.std);
}

Inputs left_padded(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                   const std::vector<std::pair<std::string, const std::vector<std::vector<int64_t>>*>>& extra) {
  std::size_t T = 0;
  for (const auto& r : rows) T = std::max(T, r.size());
  std::vector<int64_t> ids, mask;
  std::vector<std::vector<int64_t>> more(extra.size());
  for (std::size_t b = 0; b < rows.size(); ++b) {
    const std::size_t pad = T - rows[b].size();
    ids.resize(ids.size() + pad, pad_id);
    mask.resize(mask.size() + pad, 0);
    ids.insert(ids.end(), rows[b].begin(), rows[b].end());
    mask.resize(mask.size() + rows[b].size(), 1);
    for (std::size_t e = 0; e < extra.size(); ++e) {
      const std::vector<int64_t>& v = extra[e].second->at(b);
      VLM_CHECK(v.size() == rows[b].size(), extra[e].first << ": row " << b << " has " << v.size() << " values for "
                                                           << rows[b].size() << " tokens");
      more[e].resize(more[e].size() + pad, 0);
      more[e].insert(more[e].end(), v.begin(), v.end());
    }
  }
  Inputs in;
  const Shape shape = {static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)};
  in.set_ints("input_ids", shape, ids);
  in.set_ints("attention_mask", shape, mask);
  for (std::size_t e = 0; e < extra.size(); ++e) in.set_ints(extra[e].first, shape, more[e]);
  return in;
}

}  // namespace vlm
