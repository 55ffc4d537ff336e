#include "lib/data/vocab.h"

#include "lib/core/check.h"

namespace vlm::data {

Vocab::Vocab(const std::vector<std::string>& specials, const std::vector<std::string>& words)
    : num_specials_(static_cast<int64_t>(specials.size())) {
  for (const auto* list : {&specials, &words}) {
    for (const std::string& w : *list) {
      VLM_CHECK(!w.empty(), "vocab: empty word");
      VLM_CHECK(ids_.count(w) == 0, "vocab: \"" << w << "\" appears twice");
      ids_.emplace(w, size());
      words_.push_back(w);
    }
  }
}

int64_t Vocab::id(const std::string& word) const {
  const auto it = ids_.find(word);
  VLM_CHECK(it != ids_.end(), "vocab: \"" << word << "\" is not in the vocabulary");
  return it->second;
}

const std::string& Vocab::word(int64_t id) const {
  VLM_CHECK(id >= 0 && id < size(), "vocab: id " << id << " is outside [0, " << size() << ")");
  return words_[static_cast<std::size_t>(id)];
}

std::vector<int64_t> Vocab::encode(const std::vector<std::string>& words) const {
  std::vector<int64_t> out;
  out.reserve(words.size());
  for (const std::string& w : words) out.push_back(id(w));
  return out;
}

std::vector<std::string> Vocab::decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (const int64_t i : ids) out.push_back(word(i));
  return out;
}

}  // namespace vlm::data
