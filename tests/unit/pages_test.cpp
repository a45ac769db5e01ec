// Proves each page-pipeline stage: zero detection, hashing, the unchanged
// filter, the mirrored dedupe dictionary (and that a hash collision can
// never return the wrong page), and the LZ4/zstd codecs, including that
// corrupt or hostile compressed input fails without writing past the page.
#include <gtest/gtest.h>

#include <random>

#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/DedupeDictionary.hpp"
#include "dataplane/pages/Page.hpp"
#include "dataplane/pages/UnchangedFilter.hpp"

using namespace mm::pages;
using mm::test::PageKind;

TEST(ZeroPage, DetectsZeroAndAnySingleNonZeroByte) {
  std::vector<uint8_t> p(kPageSize, 0);
  EXPECT_TRUE(is_zero_page(p.data()));
  for (size_t pos : {size_t(0), size_t(7), size_t(63), size_t(64), size_t(2049), kPageSize - 1}) {
    p[pos] = 1;
    EXPECT_FALSE(is_zero_page(p.data())) << pos;
    p[pos] = 0;
  }
}

TEST(PageHash, DeterministicAndSensitiveToOneBit) {
  auto a = mm::test::corpus(PageKind::text, 1);
  const PageHash h = page_hash(a.data());
  EXPECT_EQ(h, page_hash(a.data()));
  a[1000] ^= 0x10;
  EXPECT_FALSE(h == page_hash(a.data()));
}

TEST(UnchangedFilter, RemembersTheLastHashPerPageAndBlock) {
  UnchangedFilter f;
  const PageHash a{1, 2}, b{3, 4};
  EXPECT_FALSE(f.unchanged("pc.ram", 5, a));  // first time: send it
  EXPECT_TRUE(f.unchanged("pc.ram", 5, a));   // same bytes again: skip
  EXPECT_FALSE(f.unchanged("pc.ram", 5, b));  // changed: send
  EXPECT_TRUE(f.unchanged("pc.ram", 5, b));
  EXPECT_FALSE(f.unchanged("other", 5, b));   // blocks are separate
  f.invalidate("pc.ram", 5);                  // someone else wrote the page
  EXPECT_FALSE(f.unchanged("pc.ram", 5, b));
}

TEST(DedupeDictionary, BothEndsStayMirroredThroughEviction) {
  DedupeDictionary sender(8), receiver(8);
  auto pages = mm::test::corpus(PageKind::random, 20);
  for (size_t i = 0; i < 20; ++i) {
    const uint8_t* p = pages.data() + i * kPageSize;
    const PageHash h = page_hash(p);
    ASSERT_FALSE(sender.find(p, h).has_value());
    const uint32_t s1 = sender.insert(p, h), s2 = receiver.insert(p, h);
    ASSERT_EQ(s1, s2);
    EXPECT_EQ(std::memcmp(receiver.get(s2), p, kPageSize), 0);
    // A page inserted moments ago is found in the slot the receiver has.
    const auto hit = sender.find(p, h);
    ASSERT_TRUE(hit.has_value());
    EXPECT_EQ(std::memcmp(receiver.get(*hit), p, kPageSize), 0);
  }
  // The oldest pages were evicted on both ends.
  const uint8_t* first = pages.data();
  EXPECT_FALSE(sender.find(first, page_hash(first)).has_value());
  EXPECT_EQ(receiver.get(8), nullptr);  // beyond the dictionary: a lying peer
}

TEST(DedupeDictionary, HashCollisionNeverReturnsOtherBytes) {
  DedupeDictionary d(4);
  auto pages = mm::test::corpus(PageKind::random, 2);
  const PageHash forged{42, 42};
  d.insert(pages.data(), forged);
  EXPECT_FALSE(d.find(pages.data() + kPageSize, forged).has_value());
  EXPECT_TRUE(d.find(pages.data(), forged).has_value());
}

template <class Codec>
void roundtrip_corpora(Codec& c) {
  std::vector<uint8_t> out(kCompressBound), back(kPageSize);
  for (auto kind : {PageKind::zero, PageKind::text, PageKind::code, PageKind::random, PageKind::mix}) {
    auto pages = mm::test::corpus(kind, 32);
    for (size_t i = 0; i < 32; ++i) {
      const uint8_t* p = pages.data() + i * kPageSize;
      const size_t n = c.compress(p, out.data(), out.size());
      if (kind == PageKind::random) {
        EXPECT_EQ(n, 0u) << "random pages are not worth compressing";
        continue;
      }
      if (kind == PageKind::zero || kind == PageKind::text) {
        EXPECT_GT(n, 0u) << mm::test::name(kind);
      }
      if (n == 0) continue;
      EXPECT_LE(n, kWorthwhile);
      ASSERT_TRUE(c.decompress(out.data(), n, back.data())) << mm::test::name(kind);
      EXPECT_EQ(std::memcmp(back.data(), p, kPageSize), 0) << mm::test::name(kind);
    }
  }
}

template <class Codec>
void rejects_corruption(Codec& c) {
  auto page = mm::test::corpus(PageKind::text, 1);
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

TEST(Codecs, Lz4RoundTripsAndRefusesRandom) {
  Lz4Codec c;
  roundtrip_corpora(c);
}

TEST(Codecs, ZstdRoundTripsAndRefusesRandom) {
  ZstdCodec c;
  roundtrip_corpora(c);
}

TEST(Codecs, Lz4RejectsCorruptInputWithinThePage) {
  Lz4Codec c;
  rejects_corruption(c);
}

TEST(Codecs, ZstdRejectsCorruptInputWithinThePage) {
  ZstdCodec c;
  rejects_corruption(c);
}
