#include "lib/data/metrics.h"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "lib/core/check.h"

namespace vlm::data {

namespace {

struct Sums {
  int64_t n = 0;
  double num = 0, den = 0, base_num = 0;
};

}  // namespace

bool known_metric(const std::string& m) { return m == "exact_match" || m == "cer" || m == "char_accuracy" || m == "mae"; }
bool lower_is_better(const std::string& m) { return m == "cer" || m == "mae"; }

std::string metric_title(const std::string& m) {
  if (m == "exact_match") return "exact-match accuracy";
  if (m == "cer") return "character error rate";
  if (m == "char_accuracy") return "per-character accuracy";
  if (m == "mae") return "mean absolute error";
  return m;
}

int64_t token_edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<int64_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int64_t>(j);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int64_t>(i);
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

int64_t positional_matches(const std::vector<std::string>& prediction, const std::vector<std::string>& answer) {
  int64_t m = 0;
  for (std::size_t i = 0; i < std::min(prediction.size(), answer.size()); ++i) m += prediction[i] == answer[i];
  return m;
}

std::vector<std::string> majority_string(const std::vector<std::vector<std::string>>& answers) {
  std::map<std::size_t, int64_t> lengths;
  for (const auto& a : answers) ++lengths[a.size()];
  std::size_t len = 0;
  int64_t best = -1;
  for (const auto& [l, c] : lengths)  // ascending: ties go to the shorter length
    if (c > best) {
      best = c;
      len = l;
    }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < len; ++i) {
    std::map<std::string, int64_t> freq;
    for (const auto& a : answers)
      if (a.size() > i) ++freq[a[i]];
    std::string top;
    int64_t top_c = -1;
    for (const auto& [t, c] : freq)  // ascending: ties go to the first token in byte order
      if (c > top_c) {
        top_c = c;
        top = t;
      }
    out.push_back(top);
  }
  return out;
}

bool numeric_value(const std::vector<std::string>& tokens, int64_t& value) {
  if (tokens.size() != 1) return false;
  const std::string& t = tokens[0];
  const std::size_t start = !t.empty() && t[0] == '-' ? 1 : 0;
  if (t.size() <= start || t.size() > 18 ||
      !std::all_of(t.begin() + static_cast<std::ptrdiff_t>(start), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  value = std::strtoll(t.c_str(), nullptr, 10);
  return true;
}

std::vector<MetricScore> metric_scores(const std::vector<std::string>& metrics, const std::vector<std::string>& subtypes,
                                       const std::vector<ScoredItem>& items) {
  std::vector<MetricScore> out;
  for (const std::string& metric : metrics) {
    VLM_CHECK(known_metric(metric), "unknown metric '" << metric << "'");
    if (metric == "exact_match") continue;
    Sums all;
    for (const std::string& st : subtypes) {
      std::vector<const ScoredItem*> mine;
      for (const ScoredItem& it : items)
        if (it.subtype == st) mine.push_back(&it);
      if (mine.empty()) continue;
      Sums s;
      s.n = static_cast<int64_t>(mine.size());
      if (metric == "cer" || metric == "char_accuracy") {
        std::vector<std::vector<std::string>> answers;
        for (const ScoredItem* it : mine) answers.push_back(it->answer);
        const std::vector<std::string> base = majority_string(answers);
        for (const ScoredItem* it : mine) {
          s.den += static_cast<double>(it->answer.size());
          if (metric == "cer") {
            s.num += static_cast<double>(token_edit_distance(it->prediction, it->answer));
            s.base_num += static_cast<double>(token_edit_distance(base, it->answer));
          } else {
            s.num += static_cast<double>(positional_matches(it->prediction, it->answer));
            s.base_num += static_cast<double>(positional_matches(base, it->answer));
          }
        }
      } else {  // mae
        std::vector<int64_t> values;
        for (const ScoredItem* it : mine) {
          int64_t v = 0;
          VLM_CHECK(numeric_value(it->answer, v), "mae: answer of subtype '" << st << "' is not a number");
          values.push_back(v);
        }
        std::vector<int64_t> sorted = values;
        std::sort(sorted.begin(), sorted.end());
        const int64_t median = sorted[(sorted.size() - 1) / 2], lo = sorted.front(), hi = sorted.back();
        for (std::size_t k = 0; k < mine.size(); ++k) {
          const int64_t a = values[k];
          int64_t p = 0;
          const int64_t err = numeric_value(mine[k]->prediction, p) ? std::llabs(p - a) : std::max(a - lo, hi - a);
          s.num += static_cast<double>(err);
          s.base_num += static_cast<double>(std::llabs(median - a));
          s.den += 1;
        }
      }
      all.n += s.n;
      all.num += s.num;
      all.den += s.den;
      all.base_num += s.base_num;
      out.push_back(MetricScore{.subtype = st, .metric = metric, .n = s.n, .value = s.den > 0 ? s.num / s.den : 0.0,
                                .baseline = s.den > 0 ? s.base_num / s.den : 0.0,
                                .baseline_name = metric == "mae" ? "median_answer" : "majority_string",
                                .lower_is_better = lower_is_better(metric)});
    }
    if (all.n > 0)
      out.push_back(MetricScore{.subtype = "all", .metric = metric, .n = all.n,
                                .value = all.den > 0 ? all.num / all.den : 0.0,
                                .baseline = all.den > 0 ? all.base_num / all.den : 0.0,
                                .baseline_name = metric == "mae" ? "median_answer" : "majority_string",
                                .lower_is_better = lower_is_better(metric)});
  }
  return out;
}

}  // namespace vlm::data
