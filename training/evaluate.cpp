#include "training/evaluate.h"

#include <algorithm>
#include <map>

namespace vlm {

EvalResult evaluate(Vlm& vlm, const data::Task& task, data::Split split, int64_t n, int batch_size) {
  VLM_CHECK(n > 0 && batch_size > 0, "evaluate: n " << n << ", batch " << batch_size);
  EvalResult r;
  r.split = data::split_name(split);
  std::vector<data::Sample> batch;
  std::vector<data::ScoredItem> scored;
  for (int64_t start = 0; start < n; start += batch_size) {
    batch.clear();
    for (int64_t i = start; i < std::min<int64_t>(n, start + batch_size); ++i)
      batch.push_back(task.sample(split, static_cast<uint64_t>(i)));
    const auto answers = vlm.answer(batch, task.max_answer_tokens() + 1);
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const data::Sample& s = batch[k];
      EvalItem item{.index = start + static_cast<int64_t>(k),
                    .subtype = s.subtype,
                    .question = data::join_words(s.prompt),
                    .answer = data::join_words(s.answer),
                    .prediction = data::join_words(answers[k]),
                    .correct = answers[k] == s.answer};
      r.items.push_back(std::move(item));
      scored.push_back(data::ScoredItem{.subtype = s.subtype, .answer = s.answer, .prediction = answers[k]});
    }
  }
  // Per subtype: accuracy, chance, and the majority answer's share.
  int64_t all_majority = 0;
  SubtypeScore all{.subtype = "all"};
  double chance_sum = 0;
  for (const std::string& st : task.subtypes()) {
    SubtypeScore sc{.subtype = st, .chance = task.chance(st)};
    std::map<std::string, int64_t> freq;
    for (const EvalItem& it : r.items) {
      if (it.subtype != st) continue;
      ++sc.n;
      sc.correct += it.correct;
      ++freq[it.answer];
    }
    if (sc.n == 0) continue;  // never asked: no row (an n=0 row would read as 0% accuracy)
    int64_t top = 0;
    for (const auto& [a, c] : freq) top = std::max(top, c);
    sc.accuracy = static_cast<double>(sc.correct) / static_cast<double>(sc.n);
    sc.majority = static_cast<double>(top) / static_cast<double>(sc.n);
    all.n += sc.n;
    all.correct += sc.correct;
    all_majority += top;
    chance_sum += sc.chance * static_cast<double>(sc.n);
    r.scores.push_back(sc);
  }
  if (all.n > 0) {
    all.accuracy = static_cast<double>(all.correct) / static_cast<double>(all.n);
    all.majority = static_cast<double>(all_majority) / static_cast<double>(all.n);
    all.chance = chance_sum / static_cast<double>(all.n);
  }
  r.scores.push_back(all);
  const std::vector<std::string> metrics = task.metrics();
  r.metrics = data::metric_scores(metrics, task.subtypes(), scored);
  if (!metrics.empty()) r.headline = metrics.front();
  return r;
}

}  // namespace vlm
