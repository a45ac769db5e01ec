// Pure per-page functions of the page pipeline (docs/ARCHITECTURE.md §6): zero
// detection and the 128-bit XXH3 page hash. 4 KiB pages (TARGET_PAGE_SIZE
// on x86, dataplane/qemu/QEMU-7.2-STREAM.md §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

namespace mm::pages {

inline constexpr size_t kPageSize = 4096;

struct PageHash {
  uint64_t lo = 0, hi = 0;
  bool operator==(const PageHash&) const = default;
};

struct PageHashHasher {
  size_t operator()(const PageHash& h) const { return size_t(h.lo ^ (h.hi * 0x9E3779B97F4A7C15ull)); }
};

// True when all 4096 bytes are zero. Word-wise OR with an early exit every
// cache line: zero pages are common and random pages fail in the first line.
inline bool is_zero_page(const uint8_t* p) {
  for (size_t line = 0; line < kPageSize; line += 64) {
    uint64_t acc = 0;
    for (size_t w = 0; w < 64; w += 8) {
      uint64_t v;
      std::memcpy(&v, p + line + w, 8);
      acc |= v;
    }
    if (acc) return false;
  }
  return true;
}

PageHash page_hash(const uint8_t* p);
// page_hash of a page of zeros.
const PageHash& zero_page_hash();

}  // namespace mm::pages
