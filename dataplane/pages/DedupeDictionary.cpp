#include "dataplane/pages/DedupeDictionary.hpp"

#include <sys/mman.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <atomic>
#include <bit>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace mm::pages {

namespace {
uint32_t key_of(const PageHash& h) { return uint32_t(h.lo); }

// A page into its ring slot. The ring (64 MiB per stream by default) is far
// larger than the caches and a slot is read again only on a dedupe hit, so
// on x86 the copy uses streaming stores: the slot's old cache lines are not
// read first and the page does not push the pipeline's working set out of
// the cache. The ring has one owner, which sees its own streaming stores in
// program order; no fence is needed. Slots are 16-byte aligned (the ring
// starts on a 2 MiB boundary and slots are whole pages).
void copy_to_slot(uint8_t* slot, const uint8_t* page) {
#if defined(__SSE2__)
  auto* d = reinterpret_cast<__m128i*>(slot);
  const auto* s = reinterpret_cast<const __m128i*>(page);
  for (size_t i = 0; i < kPageSize / sizeof(__m128i); i += 4) {
    const __m128i a = _mm_loadu_si128(s + i);
    const __m128i b = _mm_loadu_si128(s + i + 1);
    const __m128i c = _mm_loadu_si128(s + i + 2);
    const __m128i e = _mm_loadu_si128(s + i + 3);
    _mm_stream_si128(d + i, a);
    _mm_stream_si128(d + i + 1, b);
    _mm_stream_si128(d + i + 2, c);
    _mm_stream_si128(d + i + 3, e);
  }
#else
  std::memcpy(slot, page, kPageSize);
#endif
}

// Rings of ended sessions, kept for the next ones (session set-up and
// teardown only: the one lock here is never taken per page). A fresh ring
// costs the kernel a zeroed page per page it touches: in a 512 MiB
// migration that was a fifth of the source worker's time. A kept ring is
// marked MADV_FREE: the kernel may take its memory back under pressure
// (the next touch then faults in a zero page, which is fine: no slot is
// read before it is filled), and until then reusing it costs nothing.
struct RingPool {
  struct Mapping {
    void* map;
    size_t len;
  };
  static constexpr size_t kMaxBytes = size_t(1) << 30;
  std::mutex mutex;
  std::vector<Mapping> kept;
  size_t kept_bytes = 0;
  std::atomic<uint64_t> mapped{0}, reused{0};
};

RingPool& ring_pool() {
  static RingPool* p = new RingPool();  // never destroyed: rings may outlive static destruction order
  return *p;
}
}  // namespace

DedupeDictionary::Ring::Ring(size_t bytes) : bytes_(bytes) {
  RingPool& pool = ring_pool();
  {
    std::lock_guard lock(pool.mutex);
    for (auto it = pool.kept.begin(); it != pool.kept.end(); ++it) {
      if (it->len != map_len()) continue;
      map_ = it->map;
      pool.kept_bytes -= it->len;
      pool.kept.erase(it);
      break;
    }
  }
  const bool kept = map_ != nullptr;
  if (!kept) {
    map_ = mmap(nullptr, map_len(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      throw std::bad_alloc();
    }
  }
  (kept ? pool.reused : pool.mapped).fetch_add(1, std::memory_order_relaxed);
  const uintptr_t a = (reinterpret_cast<uintptr_t>(map_) + kHugePage - 1) & ~(kHugePage - 1);
  data_ = reinterpret_cast<uint8_t*>(a);
  // Advice only: without transparent huge pages the ring is on 4 KiB pages.
  // A kept ring has it already (MADV_FREE leaves it in place).
  if (!kept) (void)madvise(data_, bytes, MADV_HUGEPAGE);
}

DedupeDictionary::Ring::~Ring() {
  if (!map_) return;
  RingPool& pool = ring_pool();
  {
    std::lock_guard lock(pool.mutex);
    if (pool.kept_bytes + map_len() <= RingPool::kMaxBytes) {
      (void)madvise(data_, bytes_, MADV_FREE);
      pool.kept.push_back({map_, map_len()});
      pool.kept_bytes += map_len();
      return;
    }
  }
  munmap(map_, map_len());
}

void DedupeDictionary::reserve(uint32_t slots, unsigned count) {
  const size_t bytes = size_t(slots == 0 ? 1 : slots) * kPageSize;
  // All held until the last is made: a ring released inside the loop
  // would only be taken again by the next one.
  std::vector<std::unique_ptr<Ring>> made;
  for (unsigned i = 0; i < count; ++i) {
    auto r = std::make_unique<Ring>(bytes);
    volatile uint8_t* p = r->get();
    for (size_t off = 0; off < bytes; off += 4096) p[off] = 0;
    made.push_back(std::move(r));
  }
}  // each ring's destructor keeps it in the pool

DedupeDictionary::RingCounts DedupeDictionary::ring_counts() {
  RingPool& pool = ring_pool();
  std::lock_guard lock(pool.mutex);
  return {pool.mapped.load(std::memory_order_relaxed), pool.reused.load(std::memory_order_relaxed),
          pool.kept.size(), pool.kept_bytes};
}

DedupeDictionary::DedupeDictionary(uint32_t slots, Role role, bool by_page)
    : slots_(slots == 0 ? 1 : slots),
      data_(size_t(slots_) * kPageSize) {
  if (role == Role::sender) {
    // At most half full: a miss ends within a couple of probes.
    const uint32_t cap = std::bit_ceil(uint32_t(2 * uint64_t(slots_)));
    index_mask_ = cap - 1;
    index_ = std::make_unique<Entry[]>(cap);
    hashes_ = std::make_unique<PageHash[]>(slots_);
    if (by_page) {
      keys_ = std::make_unique_for_overwrite<uint64_t[]>(slots_);
      for (uint32_t i = 0; i < slots_; ++i) keys_[i] = kNoKey;
      base_ = std::make_unique<uint32_t[]>(cap);
    }
  }
}

uint32_t DedupeDictionary::base_bucket(uint64_t key) const {
  for (uint32_t b = base_home(key);; b = (b + 1) & index_mask_) {
    const uint32_t s1 = base_[b];
    if (s1 == 0) return UINT32_MAX;
    if (keys_[s1 - 1] == key) return b;
  }
}

void DedupeDictionary::erase_base_bucket(uint32_t b) {
  base_[b] = 0;
  for (uint32_t i = (b + 1) & index_mask_;; i = (i + 1) & index_mask_) {
    const uint32_t s1 = base_[i];
    if (s1 == 0) return;
    const uint32_t h = base_home(keys_[s1 - 1]);
    if (((i - h) & index_mask_) >= ((i - b) & index_mask_)) {
      base_[b] = s1;
      base_[i] = 0;
      b = i;
    }
  }
}

std::optional<uint32_t> DedupeDictionary::find_base(uint64_t key) const {
  if (!base_ || key == kNoKey) return std::nullopt;
  const uint32_t b = base_bucket(key);
  if (b == UINT32_MAX) return std::nullopt;
  return base_[b] - 1;
}

uint32_t DedupeDictionary::bucket_of(uint32_t slot) const {
  for (uint32_t b = home(key_of(hashes_[slot]));; b = (b + 1) & index_mask_) {
    const Entry& e = index_[b];
    if (e.slot1 == 0) return UINT32_MAX;
    if (e.slot1 == slot + 1) return b;
  }
}

void DedupeDictionary::erase_bucket(uint32_t b) {
  // Backward shift: pull later entries of the probe run into the hole
  // when the hole lies between their home and where they sit.
  index_[b] = Entry{};
  for (uint32_t i = (b + 1) & index_mask_;; i = (i + 1) & index_mask_) {
    Entry& e = index_[i];
    if (e.slot1 == 0) return;
    const uint32_t h = home(e.key);
    if (((i - h) & index_mask_) >= ((i - b) & index_mask_)) {
      index_[b] = e;
      e = Entry{};
      b = i;
    }
  }
}

std::optional<uint32_t> DedupeDictionary::find(const uint8_t* page, const PageHash& h) const {
  if (!index_) return std::nullopt;
  const uint32_t key = key_of(h);
  for (uint32_t b = home(key);; b = (b + 1) & index_mask_) {
    const Entry& e = index_[b];
    if (e.slot1 == 0) return std::nullopt;
    if (e.key != key) continue;
    const uint32_t slot = e.slot1 - 1;
    if (!(hashes_[slot] == h)) continue;
    // The index holds one entry per hash (the newest slot); a collision
    // (same hash, other bytes) is a miss, never a wrong page.
    if (std::memcmp(data_.get() + size_t(slot) * kPageSize, page, kPageSize) != 0) return std::nullopt;
    return slot;
  }
}

uint32_t DedupeDictionary::insert(const uint8_t* page, const PageHash& h, uint64_t page_key) {
  const uint32_t slot = next_;
  next_ = next_ + 1 == slots_ ? 0 : next_ + 1;
  const bool evicting = slot < filled_;
  if (!evicting) ++filled_;
  copy_to_slot(data_.get() + size_t(slot) * kPageSize, page);
  if (!index_) return slot;
  if (base_) {
    // The slot's previous page is no base any more; this one's older slot
    // neither (the slot now holds its last version).
    if (evicting && keys_[slot] != kNoKey) {
      if (const uint32_t b = base_bucket(keys_[slot]); b != UINT32_MAX && base_[b] == slot + 1) erase_base_bucket(b);
    }
    keys_[slot] = kNoKey;
    if (page_key != kNoKey) {
      if (const uint32_t b = base_bucket(page_key); b != UINT32_MAX) {
        keys_[base_[b] - 1] = kNoKey;
        keys_[slot] = page_key;
        base_[b] = slot + 1;
      } else {
        keys_[slot] = page_key;
        for (uint32_t c = base_home(page_key);; c = (c + 1) & index_mask_) {
          if (base_[c] == 0) {
            base_[c] = slot + 1;
            break;
          }
        }
      }
    }
  }
  // The slot's previous page leaves the index, if its entry still points here.
  if (evicting) {
    if (const uint32_t b = bucket_of(slot); b != UINT32_MAX) erase_bucket(b);
  }
  hashes_[slot] = h;
  const uint32_t hkey = key_of(h);
  for (uint32_t b = home(hkey);; b = (b + 1) & index_mask_) {
    Entry& e = index_[b];
    if (e.slot1 == 0) {
      e = Entry{slot + 1, hkey};
      return slot;
    }
    if (e.key == hkey && hashes_[e.slot1 - 1] == h) {
      e.slot1 = slot + 1;  // the same hash again (a collision): the newest page wins
      return slot;
    }
  }
}

void DedupeDictionary::clear() {
  next_ = 0;
  filled_ = 0;
  if (index_) std::memset(static_cast<void*>(index_.get()), 0, sizeof(Entry) * (size_t(index_mask_) + 1));
  if (base_) {
    std::memset(base_.get(), 0, sizeof(uint32_t) * (size_t(index_mask_) + 1));
    for (uint32_t i = 0; i < slots_; ++i) keys_[i] = kNoKey;
  }
}

const uint8_t* DedupeDictionary::get(uint32_t slot) const {
  if (slot >= filled_) return nullptr;
  return data_.get() + size_t(slot) * kPageSize;
}

}  // namespace mm::pages
