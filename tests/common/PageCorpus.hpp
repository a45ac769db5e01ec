// Page corpora for tests and benchmarks, generated (never shipped):
// zero, text-like, machine-code-like, random, and a realistic mix in the
// proportions the test guest's memload uses.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace mm::test {

enum class PageKind { zero, text, code, random, mix };

inline void fill_page(uint8_t* p, PageKind kind, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  static const char* words[] = {"the ",   "migration ", "page ",    "memory ", "kernel: ", "error ",
                                "INFO ",  "request ",   "GET / ",   "200 ",    "cache ",   "\n"};
  static const uint8_t ops[] = {0x48, 0x89, 0xe5, 0x55, 0xc3, 0x8b, 0x45, 0xf8, 0xe8, 0x0f, 0x1f, 0x44, 0x00};
  switch (kind) {
    case PageKind::zero:
      std::memset(p, 0, 4096);
      break;
    case PageKind::text:
      for (size_t off = 0; off < 4096;) {
        const char* w = words[rng() % (sizeof words / sizeof *words)];
        const size_t n = std::min(std::strlen(w), 4096 - off);
        std::memcpy(p + off, w, n);
        off += n;
      }
      break;
    case PageKind::code:
      for (size_t i = 0; i < 4096; ++i) {
        const uint64_t r = rng();
        p[i] = (r & 7) < 6 ? ops[r % sizeof ops] : uint8_t(r >> 16);
      }
      break;
    case PageKind::random:
      for (size_t i = 0; i < 4096; i += 8) {
        const uint64_t r = rng();
        std::memcpy(p + i, &r, 8);
      }
      break;
    case PageKind::mix: {
      const unsigned r = unsigned(seed * 2654435761u % 100);
      fill_page(p, r < 30 ? PageKind::zero : r < 60 ? PageKind::text : r < 80 ? PageKind::code : PageKind::random,
                seed + 1);
      break;
    }
  }
}

inline std::vector<uint8_t> corpus(PageKind kind, size_t pages) {
  std::vector<uint8_t> v(pages * 4096);
  for (size_t i = 0; i < pages; ++i) fill_page(v.data() + i * 4096, kind, i);
  return v;
}

inline const char* name(PageKind k) {
  switch (k) {
    case PageKind::zero: return "zero";
    case PageKind::text: return "text";
    case PageKind::code: return "code";
    case PageKind::random: return "random";
    case PageKind::mix: return "mix";
  }
  return "?";
}

}  // namespace mm::test
