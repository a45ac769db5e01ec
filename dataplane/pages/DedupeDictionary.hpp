// The mirrored dedupe dictionary (dataplane/wire/MMP.md, MULTIFD_BEGIN's
// dict_slots and PAGE_REF): both ends keep the last D distinct pages sent,
// inserted into the next slot in ring order, so a REF record names a slot
// without a round trip. The sender finds candidates by hash in a fixed
// open-addressing index and confirms byte equality (a hash collision must
// never turn into a wrong page); the receiver never looks anything up and
// keeps only the slot ring. Nothing allocates after construction.
//
// The ring is also the base cache of PAGE_DELTA (MMP.md): a sender made
// with `by_page` keeps a second index, from a page's key (its RAM block and
// page number, as the encoder numbers them) to the slot holding the last
// version of that page this stream sent, so a page sent again can go as its
// changes against that slot. The receiver needs no such index: the record
// names the slot.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "dataplane/pages/Page.hpp"

namespace mm::pages {

class DedupeDictionary {
 public:
  enum class Role { sender, receiver };
  explicit DedupeDictionary(uint32_t slots, Role role = Role::sender, bool by_page = false);
  // A page key no page has (insert without one).
  static constexpr uint64_t kNoKey = UINT64_MAX;

  // Sender: the slot holding exactly these bytes, if any (receiver: none).
  std::optional<uint32_t> find(const uint8_t* page, const PageHash& h) const;
  // Both ends, in the same order: stores the page in the next ring slot
  // (evicting its previous occupant) and returns that slot. key: the
  // page's, for a sender made by_page (the slot becomes its base).
  uint32_t insert(const uint8_t* page, const PageHash& h, uint64_t key = kNoKey);
  // Sender made by_page: the slot holding the last version of the page
  // with this key still in the ring, if any.
  std::optional<uint32_t> find_base(uint64_t key) const;
  // The bytes of a slot at the sender (filled slots only).
  const uint8_t* slot_bytes(uint32_t slot) const { return get(slot); }
  // Receiver: the bytes in a slot, or nullptr for a slot never filled
  // (a peer naming it is lying).
  const uint8_t* get(uint32_t slot) const;
  // Empties it (both ends must do so at the same point); keeps the memory.
  void clear();
  uint32_t slots() const { return slots_; }
  uint32_t filled() const { return filled_; }
  // The slot the next insert() fills.
  uint32_t next() const { return next_; }
  bool has_index() const { return index_ != nullptr; }
  // Entries of the sender's index table (a power of two, >= 2 x slots).
  uint32_t index_capacity() const { return index_ ? index_mask_ + 1 : 0; }

  // Slot rings of the whole process: mapped fresh, reused from an ended
  // dictionary, and kept now for the next one (at most 1 GiB).
  struct RingCounts {
    uint64_t mapped = 0;
    uint64_t reused = 0;
    size_t kept = 0;
    size_t kept_bytes = 0;
  };
  static RingCounts ring_counts();
  // Makes `count` rings for dictionaries of `slots` ready (mapped, every
  // page touched) and keeps them for the next dictionaries of that size:
  // the daemon does it at start, so that its first sessions do not pay the
  // kernel's zeroing of fresh memory mid-migration. Throws std::bad_alloc.
  static void reserve(uint32_t slots, unsigned count);

 private:
  // One index entry: the slot + 1 (0: empty) and the low 32 bits of the
  // page hash, which also give the entry's home bucket. Linear probing
  // with backward-shift deletion: no tombstones, so probes stay short
  // however long the stream runs.
  struct Entry {
    uint32_t slot1 = 0;
    uint32_t key = 0;
  };
  uint32_t home(uint32_t key) const { return key & index_mask_; }
  uint32_t base_home(uint64_t key) const { return uint32_t((key * 0x9E3779B97F4A7C15ull) >> 32) & index_mask_; }
  // The bucket of the base index holding key, or UINT32_MAX.
  uint32_t base_bucket(uint64_t key) const;
  void erase_base_bucket(uint32_t b);
  // The bucket of slot's entry, or UINT32_MAX.
  uint32_t bucket_of(uint32_t slot) const;
  void erase_bucket(uint32_t b);

  uint32_t slots_;
  uint32_t next_ = 0;
  uint32_t filled_ = 0;
  // The slot ring: anonymous memory on transparent huge pages where the
  // kernel allows them (MADV_HUGEPAGE). Slots are touched, and their memory
  // committed, as they fill: with 4 KiB pages a 64 MiB ring cost 16 k page
  // faults per stream and session, in the middle of the migration. An
  // ended dictionary's ring is kept for the next one of the same size.
  class Ring {
   public:
    explicit Ring(size_t bytes);
    ~Ring();
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    uint8_t* get() const { return data_; }

   private:
    static constexpr size_t kHugePage = size_t(2) << 20;
    // One huge page more than the ring, so that it can start on a 2 MiB
    // boundary and every huge page of it can be backed as one.
    size_t map_len() const { return bytes_ + kHugePage; }
    size_t bytes_;
    void* map_ = nullptr;
    uint8_t* data_ = nullptr;
  };
  Ring data_;
  std::unique_ptr<PageHash[]> hashes_;  // sender: each slot's page hash
  std::unique_ptr<Entry[]> index_;      // sender's lookup
  // by_page sender: each slot's page key, and the base index (slot + 1,
  // 0: empty; same capacity as index_, linear probing, backward shift).
  std::unique_ptr<uint64_t[]> keys_;
  std::unique_ptr<uint32_t[]> base_;
  uint32_t index_mask_ = 0;
};

}  // namespace mm::pages
