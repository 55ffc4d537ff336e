#include "architectures/lm_side.h"

#include <algorithm>
#include <utility>

#include "lib/ops/ops.h"

namespace vlm {

// ---- RoPE settings ----

io::HfConfig rope_dict(const io::HfConfig& text) {
  if (text.has("rope_scaling")) {
    const nlohmann::json& rs = text.json().at("rope_scaling");
    if (!rs.is_object()) text.fail("rope_scaling", "expected an object or null, got " + io::short_dump(rs));
    if (!rs.empty()) return text.sub("rope_scaling");  // `rope_scaling or rope_parameters`: {} is falsy
  }
  return text.sub("rope_parameters");
}

RopeSettings read_rope(const io::HfConfig& text, const RopeRules& rules) {
  const std::string family(rules.family);
  const io::HfConfig rp = rope_dict(text);
  RopeSettings r;
  r.dict_key = text.has("rope_scaling") && !text.json().at("rope_scaling").empty() ? "rope_scaling" : "rope_parameters";

  const char* type_key = rp.has("rope_type") ? "rope_type" : "type";
  const std::string type = rp.get_string(type_key, "default");
  if (type != "default" && !(rules.mrope && type == "mrope"))
    rp.fail(type_key, "\"" + type + "\" is not supported (" + family + " implements only the default RoPE" +
                          (rules.mrope ? ", also named \"mrope\")" : ")"));

  if (rp.has("rope_theta")) {
    r.theta = rp.get_double("rope_theta", rules.default_theta);
    if (!(r.theta > 0.0)) rp.fail("rope_theta", "must be positive");
  } else if (rules.flat_keys && text.has("rope_theta")) {
    r.theta = text.get_double("rope_theta", rules.default_theta);
    if (!(r.theta > 0.0)) text.fail("rope_theta", "must be positive");
  } else {
    r.theta = rules.default_theta;
  }

  const bool prf_in_dict = rp.has("partial_rotary_factor");
  const io::HfConfig& prf_cfg = prf_in_dict ? rp : text;
  if (prf_in_dict || (rules.flat_keys && text.has("partial_rotary_factor"))) {
    r.partial_rotary_factor = prf_cfg.get_double("partial_rotary_factor", rules.default_partial_rotary_factor);
    if (!(r.partial_rotary_factor >= 0.0 && r.partial_rotary_factor <= 1.0))
      prf_cfg.fail("partial_rotary_factor", "must be in [0, 1]");
  } else {
    r.partial_rotary_factor = rules.default_partial_rotary_factor;
  }

  if (rules.mrope) r.mrope_section = rp.get_int_list("mrope_section", rules.default_mrope_section);
  return r;
}

// ---- Prompt layout ----

PromptLayout prompt_layout(const Inputs& in, std::string_view family) {
  const Shape s = in.shape("input_ids");
  VLM_CHECK(s.size() == 2, family << ": input_ids must be [B, T], got " << shape_str(s));
  PromptLayout p;
  p.batch = s[0];
  p.length = s[1];
  p.ids = in.ints("input_ids");
  std::vector<uint8_t> valid(p.ids.size(), 1);
  if (in.has("attention_mask")) {
    VLM_CHECK(in.shape("attention_mask") == s, family << ": attention_mask " << shape_str(in.shape("attention_mask"))
                                                      << " does not match input_ids " << shape_str(s));
    const std::vector<int64_t> am = in.ints("attention_mask");
    for (std::size_t i = 0; i < am.size(); ++i) valid[i] = am[i] != 0 ? 1 : 0;
  }
  p.positions.resize(valid.size());
  for (int64_t b = 0; b < p.batch; ++b) {
    int64_t seen = 0;
    for (int64_t t = 0; t < p.length; ++t) {
      const auto i = static_cast<std::size_t>(b * p.length + t);
      p.positions[i] = valid[i] ? seen : 1;
      seen += valid[i];
    }
    p.next_position.push_back(seen);
  }
  if (std::find(valid.begin(), valid.end(), uint8_t{0}) != valid.end()) p.key_valid = std::move(valid);
  return p;
}

AttnMask causal_mask(const std::vector<uint8_t>& key_valid) {
  AttnMask m;
  m.causal = true;
  m.key_valid = key_valid;
  return m;
}

// ---- The placeholder splice ----

Placeholders placeholders(const std::vector<int64_t>& ids, int64_t token_id) {
  Placeholders p;
  p.rows.resize(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    p.rows[i] = ids[i] == token_id ? 1 : 0;
    p.count += p.rows[i];
  }
  return p;
}

Tensor splice_placeholders(const Tensor& embeds, const Placeholders& at, const Tensor& features,
                           std::string_view family, std::string_view kind, int64_t token_id,
                           const std::string& features_what) {
  const int64_t C = embeds.dim(-1);
  const int64_t n = features.numel() / C;
  VLM_CHECK(features.ndim() >= 1 && features.dim(-1) == C,
            family << ": " << kind << " features are " << shape_str(features.shape()) << ", not " << C << " wide");
  VLM_CHECK(at.count == n, family << ": " << kind << " features and " << kind << " tokens do not match: " << at.count
                                  << " " << kind << " tokens (id " << token_id << ") in input_ids, " << features_what);
  if (n == 0) return embeds;
  const Tensor rows = reshape(embeds, {embeds.numel() / C, C});
  return reshape(scatter_rows(rows, at.rows, reshape(features, {n, C})), embeds.shape());
}

// ---- Decode state ----

LmDecodeState::LmDecodeState(KvCache<float> c, int64_t b, int64_t len, std::vector<uint8_t> kv,
                             std::vector<int64_t> next)
    : cache(std::move(c)), batch(b), length(len), key_valid(std::move(kv)), next_position(std::move(next)) {}

AttnMask LmDecodeState::step_mask() {
  if (!key_valid.empty()) {  // append one real key per row
    std::vector<uint8_t> kv;
    kv.reserve(static_cast<std::size_t>(batch * (length + 1)));
    for (int64_t b = 0; b < batch; ++b) {
      const auto row = key_valid.begin() + b * length;
      kv.insert(kv.end(), row, row + length);
      kv.push_back(1);
    }
    key_valid = std::move(kv);
  }
  return causal_mask(key_valid);
}

void LmDecodeState::advance() {
  ++length;
  for (int64_t& p : next_position) ++p;
}

}  // namespace vlm
