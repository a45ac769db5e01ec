// The unchanged-page filter: per RAM block, the hash of what was last sent
// for each page. QEMU re-sends every dirtied page, and many were rewritten
// with the same bytes; those need not cross the wire again. Whoever else
// writes a page at the destination (a ZERO record on the main channel, a
// page sent by another path) must invalidate it here first.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/pages/Page.hpp"

namespace mm::pages {

class UnchangedFilter {
 public:
  // True when the page at (block, page_index) was last sent with this very
  // hash. Otherwise remembers the hash (the caller sends the page).
  bool unchanged(const std::string& block, uint64_t page_index, const PageHash& h);
  void invalidate(const std::string& block, uint64_t page_index);
  void clear() { blocks_.clear(); }

 private:
  struct Entry {
    PageHash hash;
    bool valid = false;
  };
  std::unordered_map<std::string, std::vector<Entry>> blocks_;
};

}  // namespace mm::pages
