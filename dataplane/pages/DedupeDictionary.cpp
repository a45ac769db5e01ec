#include "dataplane/pages/DedupeDictionary.hpp"

#include <cstring>

namespace mm::pages {

DedupeDictionary::DedupeDictionary(uint32_t slots)
    : slots_(slots == 0 ? 1 : slots),
      data_(std::make_unique_for_overwrite<uint8_t[]>(size_t(slots_) * kPageSize)),
      hashes_(slots_) {
}

std::optional<uint32_t> DedupeDictionary::find(const uint8_t* page, const PageHash& h) const {
  auto it = index_.find(h);
  if (it == index_.end()) return std::nullopt;
  if (std::memcmp(data_.get() + size_t(it->second) * kPageSize, page, kPageSize) != 0) {
    return std::nullopt;  // a collision: same hash, other bytes
  }
  return it->second;
}

uint32_t DedupeDictionary::insert(const uint8_t* page, const PageHash& h) {
  const uint32_t slot = next_;
  next_ = (next_ + 1) % slots_;
  if (slot < filled_) {
    // Evict the slot's previous page from the index, if it still points here.
    auto it = index_.find(hashes_[slot]);
    if (it != index_.end() && it->second == slot) index_.erase(it);
  } else {
    ++filled_;
  }
  std::memcpy(data_.get() + size_t(slot) * kPageSize, page, kPageSize);
  hashes_[slot] = h;
  index_[h] = slot;
  return slot;
}

void DedupeDictionary::clear() {
  next_ = 0;
  filled_ = 0;
  index_.clear();
}

const uint8_t* DedupeDictionary::get(uint32_t slot) const {
  if (slot >= filled_) return nullptr;
  return data_.get() + size_t(slot) * kPageSize;
}

}  // namespace mm::pages
