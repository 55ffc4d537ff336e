// "Did you mean": the nearest of a set of valid names to a misspelt one, for error messages (the
// CLI's commands and flags, an experiment's keys, tasks and their parameters, families).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace vlm {

// Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
// two adjacent characters each cost 1 ("rnu" is 1 from "run").
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i)
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

// The candidate nearest to `word` when it is close enough to be a typo (at most a third of the
// longer name's characters edited, at least 1, at most 3), else "". Ties go to the first candidate.
// A word longer than 200 characters is not compared (it is no typo, and the cost is quadratic).
inline std::string nearest(std::string_view word, const std::vector<std::string>& candidates) {
  if (word.empty() || word.size() > 200) return "";
  std::string best;
  std::size_t best_d = 0;
  for (const std::string& c : candidates) {
    if (c == word || c.size() > 200) continue;
    const std::size_t limit = std::clamp<std::size_t>(std::max(word.size(), c.size()) / 3, 1, 3);
    const std::size_t dist = edit_distance(word, c);
    if (dist <= limit && (best.empty() || dist < best_d)) {
      best = c;
      best_d = dist;
    }
  }
  return best;
}

// "; did you mean \"X\"?" for the nearest candidate, or "" when none is close.
inline std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates,
                                std::string_view prefix = "") {
  const std::string n = nearest(word, candidates);
  return n.empty() ? std::string() : "; did you mean \"" + std::string(prefix) + n + "\"?";
}

}  // namespace vlm
