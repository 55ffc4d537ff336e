// Task-appropriate scores beside exact match (Task::metrics), each with the baseline a constant
// answer gets on the same items, so a number can be read against what no looking at the image gives:
// - "exact_match": the share of answers equal to the reference (the eval table's accuracy; its
//   baselines are the majority answer and chance, there).
// - "cer": character error rate, the edit distance (insertions, deletions, substitutions) from the
//   predicted tokens to the reference's, summed over items, over the reference tokens summed (OCR's
//   usual score: lower is better, 0 is perfect, and it can pass 1 when predictions are too long).
//   For ocr a token is one character.
// - "char_accuracy": reference tokens predicted at their own position, over the reference tokens.
//   Baseline of both: the positional majority string (the most frequent answer length, and at each
//   position the most frequent character among the answers that long or longer).
// - "mae": mean absolute error of a numeric answer (counting). A prediction that is no number is
//   scored as the worst a number could do among the subtype's answers (the distance from the answer
//   to the farthest of their minimum and maximum), never better than a wrong number.
//   Baseline: always answering the median answer (the constant with the least absolute error).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlm::data {

// One scored item: its subtype, reference answer and prediction (tokens).
struct ScoredItem {
  std::string subtype;
  std::vector<std::string> answer, prediction;
};

struct MetricScore {
  std::string subtype;  // or "all": every item (character-weighted for cer / char_accuracy)
  std::string metric;   // "cer", "char_accuracy", "mae" (exact match lives in the eval table)
  int64_t n = 0;        // items
  double value = 0, baseline = 0;
  std::string baseline_name;  // "majority_string" or "median_answer"
  bool lower_is_better = false;
};

// Whether `metric` is a name metric_scores knows ("exact_match" included), and whether lower is better.
bool known_metric(const std::string& metric);
bool lower_is_better(const std::string& metric);
// Its name in a table heading: "character error rate", "mean absolute error", ...
std::string metric_title(const std::string& metric);

// The scores of `metrics` other than "exact_match" per subtype (in `subtypes` order, subtypes with no
// item left out), then "all", metric by metric.
std::vector<MetricScore> metric_scores(const std::vector<std::string>& metrics, const std::vector<std::string>& subtypes,
                                       const std::vector<ScoredItem>& items);

// The building blocks, exposed for tests: token edit distance, tokens matching at their position,
// the positional majority string, and a token read as an integer (false when it is none).
int64_t token_edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b);
int64_t positional_matches(const std::vector<std::string>& prediction, const std::vector<std::string>& answer);
std::vector<std::string> majority_string(const std::vector<std::vector<std::string>>& answers);
bool numeric_value(const std::vector<std::string>& tokens, int64_t& value);

}  // namespace vlm::data
