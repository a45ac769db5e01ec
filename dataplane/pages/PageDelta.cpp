#include "dataplane/pages/PageDelta.hpp"

#include <cstring>

namespace mm::pages {

namespace {
constexpr size_t kWords = 4096 / 8;

uint64_t word(const uint8_t* p, size_t i) {
  uint64_t w;
  std::memcpy(&w, p + 8 * i, 8);
  return w;
}

// LEB128 of v (< 2^14 here: at most two bytes).
size_t put_varint(uint8_t* out, size_t v) {
  if (v < 0x80) {
    out[0] = uint8_t(v);
    return 1;
  }
  out[0] = uint8_t(v | 0x80);
  out[1] = uint8_t(v >> 7);
  return 2;
}

// Reads a LEB128 number of at most two bytes; false when cut or longer.
bool get_varint(std::span<const uint8_t> in, size_t& pos, size_t& v) {
  if (pos >= in.size()) return false;
  const uint8_t a = in[pos++];
  if (!(a & 0x80)) {
    v = a;
    return true;
  }
  if (pos >= in.size()) return false;
  const uint8_t b = in[pos++];
  if (b & 0x80) return false;
  v = size_t(a & 0x7f) | size_t(b) << 7;
  return true;
}

// Eight words of a 64-byte line equal in both pages.
bool line_equal(const uint8_t* a, const uint8_t* b) {
  uint64_t x = 0;
  for (size_t k = 0; k < 8; ++k) x |= word(a, k) ^ word(b, k);
  return x == 0;
}
}  // namespace

size_t delta_encode(const uint8_t* page, const uint8_t* base, uint8_t* out, size_t limit) {
  if (limit > kMaxDelta) limit = kMaxDelta;
  size_t n = 0;
  size_t last = 0;  // word after the previous run
  size_t i = 0;
  while (i < kWords) {
    if (i % 8 == 0 && line_equal(page + 8 * i, base + 8 * i)) {
      i += 8;
      continue;
    }
    if (word(page, i) == word(base, i)) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    // A run that cannot fit ends the scan at once (a page rewritten whole
    // costs a run's worth of compares, not the page's).
    const size_t room = limit > n + 4 ? (limit - n - 4) / 8 : 0;
    while (end < kWords && word(page, end) != word(base, end)) {
      if (end - i >= room) return 0;
      ++end;
    }
    const size_t count = end - i;
    // Header (at most 4 bytes) and the words must fit.
    if (n + 4 + 8 * count > limit) return 0;
    n += put_varint(out + n, i - last);
    n += put_varint(out + n, count);
    std::memcpy(out + n, page + 8 * i, 8 * count);
    n += 8 * count;
    last = end;
    i = end;
  }
  return n;
}

bool delta_apply(const uint8_t* base, std::span<const uint8_t> delta, uint8_t* out) {
  if (out != base) std::memcpy(out, base, 4096);
  size_t pos = 0;
  size_t at = 0;  // word
  while (pos < delta.size()) {
    size_t skip, count;
    if (!get_varint(delta, pos, skip) || !get_varint(delta, pos, count)) return false;
    if (count == 0 || skip > kWords - at || count > kWords - at - skip) return false;
    at += skip;
    if (delta.size() - pos < 8 * count) return false;
    std::memcpy(out + 8 * at, delta.data() + pos, 8 * count);
    pos += 8 * count;
    at += count;
  }
  return true;
}

}  // namespace mm::pages
