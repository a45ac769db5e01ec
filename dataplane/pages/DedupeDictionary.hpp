// The mirrored dedupe dictionary (WIRE.md "Dedupe dictionary"): both ends
// keep the last D distinct pages sent, inserted into the next slot in ring
// order, so a REF record names a slot without a round trip. The sender
// finds candidates by hash and confirms byte equality (a hash collision
// must never turn into a wrong page); the receiver needs only the slots.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "dataplane/pages/Page.hpp"

namespace mm::pages {

class DedupeDictionary {
 public:
  explicit DedupeDictionary(uint32_t slots);

  // Sender: the slot holding exactly these bytes, if any.
  std::optional<uint32_t> find(const uint8_t* page, const PageHash& h) const;
  // Both ends, in the same order: stores the page in the next ring slot
  // (evicting its previous occupant) and returns that slot.
  uint32_t insert(const uint8_t* page, const PageHash& h);
  // Receiver: the bytes in a slot, or nullptr for a slot never filled
  // (a peer naming it is lying).
  const uint8_t* get(uint32_t slot) const;
  // Empties it (both ends must do so at the same point); keeps the memory.
  void clear();
  uint32_t slots() const { return slots_; }
  uint32_t filled() const { return filled_; }

 private:
  uint32_t slots_;
  uint32_t next_ = 0;
  uint32_t filled_ = 0;
  // Not zeroed: slots are touched (and their memory committed) as filled.
  std::unique_ptr<uint8_t[]> data_;
  std::vector<PageHash> hashes_;
  std::unordered_map<PageHash, uint32_t, PageHashHasher> index_;  // sender's lookup
};

}  // namespace mm::pages
