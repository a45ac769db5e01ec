// Per-guest-page state kept per RAM block, found by the block's name: the
// shape both halves of the unchanged filter share (UnchangedFilter at the
// source, DeliveredTable at the destination). A block's entries grow by
// doubling to the highest page index seen, up to kMaxTrackedPages; pages
// beyond are never tracked, at either end.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mm::pages {

// 128 GiB of 4 KiB pages: it bounds what a peer's page offsets can make
// the destination's table hold (32 bytes a page: 1 GiB).
inline constexpr uint64_t kMaxTrackedPages = uint64_t(1) << 25;

template <class Entry>
class PageBlocks {
 public:
  using Block = std::vector<Entry>;

  // Looked up once per packet or main-channel record; created on first use.
  Block& block(std::string_view name) {
    auto it = blocks_.find(name);
    if (it == blocks_.end()) it = blocks_.emplace(std::string(name), std::make_unique<Block>()).first;
    return *it->second;
  }
  // The page's entry, the block grown to hold it; nullptr beyond the bound.
  static Entry* at(Block& b, uint64_t i) {
    if (i >= kMaxTrackedPages) return nullptr;
    if (i >= b.size()) b.resize(std::min<size_t>(std::max<size_t>(i + 1, b.size() * 2), kMaxTrackedPages));
    return &b[i];
  }
  size_t tracked_pages() const {
    size_t n = 0;
    for (const auto& [name, b] : blocks_) n += b->size();
    return n;
  }

 private:
  // A transparent hash spares building a std::string for each lookup.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::unique_ptr<Block>, NameHash, std::equal_to<>> blocks_;
};

}  // namespace mm::pages
