// Scoring a Vlm on a task's split: greedy answers, exact match per subtype beside the chance and
// majority baselines, and the task's own metrics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/data/metrics.h"
#include "lib/data/task.h"
#include "training/vlm.h"

namespace vlm {

struct SubtypeScore {
  std::string subtype;  // or "all"
  int64_t n = 0, correct = 0;
  double accuracy = 0, chance = 0, majority = 0;
};
struct EvalItem {
  int64_t index = 0;
  std::string subtype, question, answer, prediction;
  bool correct = false;
};
struct EvalResult {
  std::string split;                 // the split scored: "validation" or "test"
  std::vector<SubtypeScore> scores;  // the task's subtypes that were asked, in order, then "all"
  std::vector<EvalItem> items;       // every item scored, in order
  // The task's scores beside exact match (Task::metrics, lib/data/metrics.h) with their baselines,
  // per subtype asked then "all"; `headline` names the task's first metric ("exact_match": the
  // scores' accuracy against the majority rate).
  std::vector<data::MetricScore> metrics;
  std::string headline = "exact_match";
};

// Indices [0, n) of the split's stream, greedy answers in batches, exact match. The majority
// baseline is the most frequent answer's share among the same items, per subtype ("all": the
// subtype-weighted mean of always answering each subtype's majority). A subtype with no item among
// them has no row.
EvalResult evaluate(Vlm& vlm, const data::Task& task, data::Split split, int64_t n, int batch_size = 32);

}  // namespace vlm
