// Checks every page codec must pass (LZ4, zstd, DEFLATE through
// compressdev): corpora round-trip byte-exact, random pages go RAW, and
// corrupt or hostile input fails without writing past the page.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"

namespace mm::test {

using pages::kCompressBound;
using pages::kPageSize;
using pages::kWorthwhile;

template <class Codec>
void roundtrip_corpora(Codec& c) {
  std::vector<uint8_t> out(kCompressBound), back(kPageSize);
  for (auto kind : {PageKind::zero, PageKind::text, PageKind::code, PageKind::random, PageKind::mix}) {
    auto pages = corpus(kind, 32);
    for (size_t i = 0; i < 32; ++i) {
      const uint8_t* p = pages.data() + i * kPageSize;
      const size_t n = c.compress(p, out.data(), out.size());
      if (kind == PageKind::random) {
        EXPECT_EQ(n, 0u) << "random pages are not worth compressing";
        continue;
      }
      if (kind == PageKind::zero || kind == PageKind::text) {
        EXPECT_GT(n, 0u) << name(kind);
      }
      if (n == 0) continue;
      EXPECT_LE(n, kWorthwhile);
      ASSERT_TRUE(c.decompress(out.data(), n, back.data())) << name(kind);
      EXPECT_EQ(std::memcmp(back.data(), p, kPageSize), 0) << name(kind);
    }
  }
}

template <class Codec>
void rejects_corruption(Codec& c) {
  auto page = corpus(PageKind::text, 1);
  std::vector<uint8_t> out(kCompressBound);
  const size_t n = c.compress(page.data(), out.data(), out.size());
  ASSERT_GT(n, 0u);
  // The page buffer is followed by a canary that must survive everything.
  std::vector<uint8_t> back(kPageSize + 64, 0xCC);
  EXPECT_FALSE(c.decompress(out.data(), n / 2, back.data()));  // truncated
  std::mt19937 rng(5);
  int accepted_garbage = 0;
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> junk(1 + rng() % 2000);
    for (auto& b : junk) b = uint8_t(rng());
    accepted_garbage += c.decompress(junk.data(), junk.size(), back.data());
  }
  EXPECT_EQ(accepted_garbage, 0);
  for (size_t i = kPageSize; i < back.size(); ++i) ASSERT_EQ(back[i], 0xCC) << "wrote past the page at " << i;
}

}  // namespace mm::test
