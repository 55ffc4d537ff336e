// Word-level vocabulary: reserved special tokens first (ids 0..n-1, in the order given), then the
// task's words. Tasks speak in words (OCR answers in single characters), so one word is one token.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm::data {

class Vocab {
 public:
  Vocab(const std::vector<std::string>& specials, const std::vector<std::string>& words);

  int64_t size() const { return static_cast<int64_t>(words_.size()); }
  int64_t num_specials() const { return num_specials_; }
  bool contains(const std::string& word) const { return ids_.count(word) > 0; }
  int64_t id(const std::string& word) const;  // throws vlm::Error for a word outside the vocabulary
  const std::string& word(int64_t id) const;  // throws for an id out of range
  std::vector<int64_t> encode(const std::vector<std::string>& words) const;
  std::vector<std::string> decode(const std::vector<int64_t>& ids) const;
  const std::vector<std::string>& words() const { return words_; }

 private:
  std::vector<std::string> words_;
  std::unordered_map<std::string, int64_t> ids_;
  int64_t num_specials_ = 0;
};

}  // namespace vlm::data
