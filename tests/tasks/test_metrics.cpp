// Task-appropriate metrics (lib/data/metrics.h) against values computed by hand, and "did you mean"
// (lib/core/suggest.h).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "lib/core/suggest.h"
#include "lib/data/metrics.h"
#include "lib/data/task.h"

namespace vlm::data {
namespace {

std::vector<std::string> chars(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

const MetricScore& find(const std::vector<MetricScore>& v, const std::string& subtype, const std::string& metric) {
  for (const MetricScore& m : v)
    if (m.subtype == subtype && m.metric == metric) return m;
  FAIL("no " << metric << " row for " << subtype);
  static MetricScore none;
  return none;
}

TEST_CASE("token edit distance, positional matches and the majority string", "[metrics]") {
  CHECK(token_edit_distance(chars("kitten"), chars("sitting")) == 3);
  CHECK(token_edit_distance(chars("ABC"), chars("AC")) == 1);
  CHECK(token_edit_distance({}, chars("AB")) == 2);
  CHECK(token_edit_distance(chars("AB"), {}) == 2);
  CHECK(positional_matches(chars("AXCD"), chars("ABC")) == 2);
  CHECK(positional_matches(chars("BC"), chars("ABC")) == 0);  // shifted by one: no position matches
  // Lengths 2, 3, 2: length 2; position 0: A twice, B once; position 1: B twice (AB, BB), C once.
  CHECK(majority_string({chars("AB"), chars("ACD"), chars("BB")}) == chars("AB"));
  // A tie of lengths goes to the shorter one, a tie of characters to the first in byte order.
  CHECK(majority_string({chars("ABC"), chars("XY")}) == chars("AB"));
  int64_t v = 0;
  CHECK(numeric_value({"7"}, v));
  CHECK(v == 7);
  CHECK(numeric_value({"-3"}, v));
  CHECK(v == -3);
  CHECK_FALSE(numeric_value({"seven"}, v));
  CHECK_FALSE(numeric_value({"1", "2"}, v));
  CHECK_FALSE(numeric_value({}, v));
}

TEST_CASE("character error rate and per-character accuracy with the majority-string baseline", "[metrics]") {
  // read: "ABC" read as "ABD" (1 edit, 2 in place), "XY" as "XYZ" (1 edit, 2 in place): 5 characters.
  // Baseline "AB" (lengths tie 3/2 -> 2; A/X tie -> A; B/Y tie -> B): edits 1 + 2, in place 2 + 0.
  // char_at: "Q" as "Q", "R" as "S": 2 characters, 1 edit; baseline "Q": 1 edit, 1 in place.
  const std::vector<ScoredItem> items = {{"read", chars("ABC"), chars("ABD")},
                                         {"char_at", chars("Q"), chars("Q")},
                                         {"read", chars("XY"), chars("XYZ")},
                                         {"char_at", chars("R"), chars("S")}};
  const auto m = metric_scores({"cer", "char_accuracy", "exact_match"}, {"read", "char_at", "never_asked"}, items);
  REQUIRE(m.size() == 6);  // 2 metrics x (read, char_at, all); exact match and never_asked have no row
  CHECK(find(m, "read", "cer").value == Approx(2.0 / 5));
  CHECK(find(m, "read", "cer").baseline == Approx(3.0 / 5));
  CHECK(find(m, "read", "cer").n == 2);
  CHECK(find(m, "read", "cer").lower_is_better);
  CHECK(find(m, "read", "cer").baseline_name == "majority_string");
  CHECK(find(m, "read", "char_accuracy").value == Approx(4.0 / 5));
  CHECK(find(m, "read", "char_accuracy").baseline == Approx(2.0 / 5));
  CHECK_FALSE(find(m, "read", "char_accuracy").lower_is_better);
  CHECK(find(m, "char_at", "cer").value == Approx(1.0 / 2));
  CHECK(find(m, "char_at", "cer").baseline == Approx(1.0 / 2));
  CHECK(find(m, "char_at", "char_accuracy").baseline == Approx(1.0 / 2));
  // "all" weights by characters: (2 + 1) / (5 + 2) edits, (3 + 1) / 7 for the baselines.
  CHECK(find(m, "all", "cer").value == Approx(3.0 / 7));
  CHECK(find(m, "all", "cer").baseline == Approx(4.0 / 7));
  CHECK(find(m, "all", "cer").n == 4);
  CHECK(find(m, "all", "char_accuracy").value == Approx(5.0 / 7));
  for (const MetricScore& s : m) CHECK(s.subtype != "never_asked");
}

TEST_CASE("mean absolute error with the median-answer baseline; a non-number scores the worst a number could",
          "[metrics]") {
  // Answers 2, 3, 7 predicted "2", "5", "x": errors 0, 2 and max(7 - 2, 7 - 7) = 5. Median 3:
  // baseline errors 1, 0, 4.
  const std::vector<ScoredItem> items = {
      {"count_all", {"2"}, {"2"}}, {"count_all", {"3"}, {"5"}}, {"count_all", {"7"}, {"x"}}};
  const auto m = metric_scores({"exact_match", "mae"}, {"count_circles", "count_all"}, items);
  REQUIRE(m.size() == 2);
  CHECK(find(m, "count_all", "mae").value == Approx(7.0 / 3));
  CHECK(find(m, "count_all", "mae").baseline == Approx(5.0 / 3));
  CHECK(find(m, "count_all", "mae").baseline_name == "median_answer");
  CHECK(find(m, "all", "mae").value == Approx(7.0 / 3));
  CHECK(metric_scores({"exact_match"}, {"count_all"}, items).empty());
}

TEST_CASE("tasks name their metrics, the headline first", "[metrics]") {
  CHECK(make_task("ocr", {})->metrics().front() == "cer");
  CHECK(make_task("counting", {})->metrics() == std::vector<std::string>{"exact_match", "mae"});
  CHECK(make_task("sort_of_clevr", {})->metrics() == std::vector<std::string>{"exact_match"});
  for (const TaskInfo& t : task_infos())
    for (const std::string& metric : make_task(t.name, {})->metrics()) CHECK(known_metric(metric));
}

TEST_CASE("did you mean: the nearest valid name within a few edits", "[suggest]") {
  CHECK(edit_distance("rnu", "run") == 1);  // a transposition
  CHECK(nearest("rnu", {"run", "check", "eval"}) == "run");
  CHECK(nearest("--thread", {"--help", "--threads", "--only"}) == "--threads");
  CHECK(nearest("stesp", {"steps", "lr"}) == "steps");
  CHECK(nearest("xyzzy", {"run", "check"}).empty());
  CHECK(did_you_mean("chek", {"run", "check"}) == "; did you mean \"check\"?");
  CHECK(did_you_mean("qqqq", {"run"}).empty());
}

}  // namespace
}  // namespace vlm::data
