// A page as its changes against an earlier version of it (MMP.md
// "PAGE_DELTA"): the words that differ, in runs. A delta body is a list of
// runs, each `skip` (LEB128: 8-byte words left as in the base since the
// previous run), `count` (LEB128, >= 1: words that follow) and count x 8
// bytes, the new words. A page whose writes touched a few cache lines (a
// counter, a heap header, a page-cache update) costs a few dozen bytes
// instead of its compressed whole. Pure code, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace mm::pages {

// Bytes a delta body may take at most (one run of the whole page).
inline constexpr size_t kMaxDelta = 4096 + 8;

// Writes the delta turning `base` into `page` into out; returns its length,
// or 0 when it would exceed `limit` (at most kMaxDelta) or the pages are
// equal (nothing to send as a delta).
size_t delta_encode(const uint8_t* page, const uint8_t* base, uint8_t* out, size_t limit);

// Builds the page from base and a delta body into out (4096 bytes; it may
// be base itself). False, with out undefined, for a body that breaks the
// format: a run past the page's end, a count of 0, a cut run or number.
bool delta_apply(const uint8_t* base, std::span<const uint8_t> delta, uint8_t* out);

}  // namespace mm::pages
