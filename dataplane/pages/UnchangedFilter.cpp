#include "dataplane/pages/UnchangedFilter.hpp"

namespace mm::pages {

bool UnchangedFilter::unchanged(const std::string& block, uint64_t page_index, const PageHash& h) {
  auto& v = blocks_[block];
  if (page_index >= v.size()) v.resize(page_index + 1);
  Entry& e = v[page_index];
  if (e.valid && e.hash == h) return true;
  e.hash = h;
  e.valid = true;
  return false;
}

void UnchangedFilter::invalidate(const std::string& block, uint64_t page_index) {
  auto it = blocks_.find(block);
  if (it != blocks_.end() && page_index < it->second.size()) it->second[page_index].valid = false;
}

}  // namespace mm::pages
