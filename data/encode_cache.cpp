#include "data/encode_cache.h"

namespace moe::data {

void EncodeCache::encode_part(std::string_view part, std::vector<std::uint32_t>& ids) {
  const auto it = parts_.find(std::string(part));
  if (it != parts_.end()) {
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<std::uint32_t> mine;
  for (int id : tok_.encode(std::string(part))) mine.push_back(static_cast<std::uint32_t>(id));
  ids.insert(ids.end(), mine.begin(), mine.end());
  if (parts_.size() >= max_) parts_.clear();
  parts_.emplace(part, std::move(mine));
}

void EncodeCache::encode(std::string_view text, std::vector<std::uint32_t>& ids) {
  if (!tok_.splits_at_spaces()) {
    for (int id : tok_.encode(std::string(text))) ids.push_back(static_cast<std::uint32_t>(id));
    return;
  }
  // Part k > 0 starts after the space that ends part k - 1 (that space is its dummy prefix);
  // part 0 is not empty (the text's own dummy prefix would have no part to go with).
  std::size_t begin = 0;
  for (std::size_t i = 1; i + 1 < text.size(); ++i) {
    if (text[i] != ' ' || text[i + 1] == ' ') continue;
    encode_part(text.substr(begin, i - begin), ids);
    begin = i + 1;
  }
  encode_part(text.substr(begin), ids);
}

}  // namespace moe::data
