// Proves each page-pipeline stage: zero detection, hashing, the unchanged
// filter and the destination's record of what it delivered, the mirrored dedupe dictionary (and that a hash collision can
// never return the wrong page), and the LZ4/zstd codecs, including that
// corrupt or hostile compressed input fails without writing past the page.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <unordered_map>

#include "CodecChecks.hpp"
#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/DedupeDictionary.hpp"
#include "dataplane/pages/DeliveredTable.hpp"
#include "dataplane/pages/Page.hpp"
#include "dataplane/pages/PageDelta.hpp"
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

TEST(UnchangedFilter, SkipsOnlyAnEarlierEpochsIdenticalSend) {
  UnchangedFilter f;
  const PageHash a{1, 2}, b{3, 4};
  auto& ram = f.block("pc.ram");
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 5, a, 1));  // never sent
  UnchangedFilter::sent(ram, 5, a, 1);
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 5, a, 1));  // same epoch: QEMU never does that; refuse
  EXPECT_TRUE(UnchangedFilter::can_skip(ram, 5, a, 2));   // same bytes, later epoch: skip
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 5, b, 2));  // changed: send
  EXPECT_FALSE(UnchangedFilter::can_skip(f.block("other"), 5, a, 2));  // blocks are separate
  UnchangedFilter::sent(ram, 5, b, 3);
  UnchangedFilter::sent(ram, 5, a, 2);  // an older send processed late does not win
  EXPECT_TRUE(UnchangedFilter::can_skip(ram, 5, b, 4));
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 5, a, 4));
}

TEST(UnchangedFilter, AWriteByAnotherPathBlocksTheSkipUntilSentAgain) {
  // The hazard of QEMU 7.2: page sent as A (multifd, epoch 1), zeroed on
  // the main channel (epoch 2), A again (epoch 3): must be sent.
  UnchangedFilter f;
  const PageHash a{1, 2};
  auto& ram = f.block("pc.ram");
  UnchangedFilter::sent(ram, 9, a, 1);
  f.written_elsewhere("pc.ram", 9, 2);
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 9, a, 3));
  UnchangedFilter::sent(ram, 9, a, 3);
  EXPECT_TRUE(UnchangedFilter::can_skip(ram, 9, a, 4));
  // A main-channel write seen before the (older) multifd send it followed.
  f.written_elsewhere("pc.ram", 20, 5);
  UnchangedFilter::sent(ram, 20, a, 4);
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 20, a, 6));
  // Absurd offsets are not tracked (and never skipped).
  UnchangedFilter::sent(ram, UnchangedFilter::kMaxPages, a, 1);
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, UnchangedFilter::kMaxPages, a, 2));
}

TEST(UnchangedFilter, TwoSendsOfOneEpochWithOtherBytesBlockTheSkip) {
  // QEMU 7.2 repeats a page at the boundary of two multifd packets (two
  // channels, one epoch). Which copy the destination applied last is
  // unknown when the bytes differ: no skip until a later epoch's send.
  UnchangedFilter f;
  const PageHash a{1, 2}, b{3, 4};
  auto& ram = f.block("pc.ram");
  UnchangedFilter::sent(ram, 7, a, 2);
  UnchangedFilter::sent(ram, 7, b, 2);
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 7, b, 3));
  EXPECT_FALSE(UnchangedFilter::can_skip(ram, 7, a, 3));
  UnchangedFilter::sent(ram, 7, b, 3);
  EXPECT_TRUE(UnchangedFilter::can_skip(ram, 7, b, 4));
  // The same bytes twice in one epoch are harmless.
  UnchangedFilter::sent(ram, 8, a, 2);
  UnchangedFilter::sent(ram, 8, a, 2);
  EXPECT_TRUE(UnchangedFilter::can_skip(ram, 8, a, 3));
}

TEST(DeliveredTable, ASameIsRightOnlyForTheLastWriteOfAnEarlierEpoch) {
  DeliveredTable t;
  DeliveredTable::Block& b = t.block("pc.ram");
  EXPECT_FALSE(DeliveredTable::check(b, 5, 0xA, 1).empty());  // never delivered
  DeliveredTable::delivered(b, 5, 0xA, 0);
  EXPECT_EQ(DeliveredTable::check(b, 5, 0xA, 1), "");
  EXPECT_EQ(DeliveredTable::check(b, 5, 0xA, 7), "");
  EXPECT_FALSE(DeliveredTable::check(b, 5, 0xA, 0).empty());  // the same epoch: not earlier
  EXPECT_NE(DeliveredTable::check(b, 5, 0xB, 1).find("other bytes"), std::string::npos);
  EXPECT_FALSE(DeliveredTable::check(b, 6, 0xA, 1).empty());  // another page
  EXPECT_FALSE(DeliveredTable::check(t.block("other"), 5, 0xA, 1).empty());  // another block
  // Rewritten in epoch 2: a SAME of epoch 2 still means the epoch-0 bytes
  // (another channel wrote the page in the SAME's own epoch), one of
  // epoch 3 the new ones.
  DeliveredTable::delivered(b, 5, 0xB, 2);
  EXPECT_EQ(DeliveredTable::check(b, 5, 0xA, 2), "");
  EXPECT_FALSE(DeliveredTable::check(b, 5, 0xB, 2).empty());
  EXPECT_EQ(DeliveredTable::check(b, 5, 0xB, 3), "");
  EXPECT_FALSE(DeliveredTable::check(b, 5, 0xA, 3).empty());
  EXPECT_GE(t.tracked_pages(), 6u);
  EXPECT_EQ(t.bytes(), t.tracked_pages() * sizeof(DeliveredTable::Entry));
}

TEST(DeliveredTable, WhatTheDaemonCannotTellIsRefused) {
  DeliveredTable t;
  DeliveredTable::Block& b = t.block("pc.ram");
  // Two writes of one epoch: the same bytes are fine, other bytes leave
  // the page unknown (QEMU applies the two in either order).
  DeliveredTable::delivered(b, 1, 0xA, 4);
  DeliveredTable::delivered(b, 1, 0xA, 4);
  EXPECT_EQ(DeliveredTable::check(b, 1, 0xA, 5), "");
  DeliveredTable::delivered(b, 2, 0xA, 4);
  DeliveredTable::delivered(b, 2, 0xB, 4);
  EXPECT_NE(DeliveredTable::check(b, 2, 0xA, 5).find("not known"), std::string::npos);
  EXPECT_FALSE(DeliveredTable::check(b, 2, 0xB, 5).empty());
  // ... until the page is written again in a later epoch.
  DeliveredTable::delivered(b, 2, 0xC, 5);
  EXPECT_EQ(DeliveredTable::check(b, 2, 0xC, 6), "");
  // A raw page on the main channel: its bytes are not seen.
  DeliveredTable::delivered(b, 3, 0xA, 1);
  DeliveredTable::delivered_unknown(b, 3, 2);
  EXPECT_FALSE(DeliveredTable::check(b, 3, 0xA, 3).empty());
  EXPECT_EQ(DeliveredTable::check(b, 3, 0xA, 2), "");  // before it, the epoch-1 bytes
  // A page beyond the tracked range is never right (and the source never
  // skips one: both ends stop at the same index).
  static_assert(DeliveredTable::kMaxPages == UnchangedFilter::kMaxPages);
  DeliveredTable::delivered(b, DeliveredTable::kMaxPages, 0xA, 0);
  EXPECT_FALSE(DeliveredTable::check(b, DeliveredTable::kMaxPages, 0xA, 1).empty());
  t.distrust("gone");
  t.distrust("second");
  EXPECT_EQ(t.distrusted(), "gone");
}

TEST(DeliveredTable, AnOlderEpochsWriteThatComesLateStillCountsBeforeTheLast) {
  DeliveredTable t;
  DeliveredTable::Block& b = t.block("pc.ram");
  DeliveredTable::delivered(b, 9, 0xC, 5);
  DeliveredTable::delivered(b, 9, 0xB, 3);  // late
  DeliveredTable::delivered(b, 9, 0xA, 1);  // later still, and older: superseded
  EXPECT_EQ(DeliveredTable::check(b, 9, 0xC, 6), "");
  EXPECT_EQ(DeliveredTable::check(b, 9, 0xB, 4), "");
  EXPECT_EQ(DeliveredTable::check(b, 9, 0xB, 5), "");
  EXPECT_FALSE(DeliveredTable::check(b, 9, 0xA, 4).empty());
  DeliveredTable::delivered(b, 9, 0xD, 3);  // a second, other write of epoch 3
  EXPECT_FALSE(DeliveredTable::check(b, 9, 0xB, 4).empty());
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

TEST(Codecs, Lz4RoundTripsAndRefusesRandom) {
  Lz4Codec c;
  mm::test::roundtrip_corpora(c);
}

TEST(Codecs, ZstdRoundTripsAndRefusesRandom) {
  ZstdCodec c;
  mm::test::roundtrip_corpora(c);
}

TEST(Codecs, Lz4RejectsCorruptInputWithinThePage) {
  Lz4Codec c;
  mm::test::rejects_corruption(c);
}

TEST(Codecs, ZstdRejectsCorruptInputWithinThePage) {
  ZstdCodec c;
  mm::test::rejects_corruption(c);
}

TEST(DedupeDictionary, IndexIsAFixedTableOfAtLeastTwiceTheSlots) {
  for (uint32_t slots : {1u, 3u, 8u, 1000u, 16384u}) {
    DedupeDictionary d(slots);
    EXPECT_GE(d.index_capacity(), 2 * slots);
    EXPECT_EQ(d.index_capacity() & (d.index_capacity() - 1), 0u);  // a power of two
  }
  DedupeDictionary r(64, DedupeDictionary::Role::receiver);
  EXPECT_FALSE(r.has_index());
  EXPECT_EQ(r.index_capacity(), 0u);
}

TEST(DedupeDictionary, TheRingStartsOnAHugePageAndHoldsItsLastSlot) {
  // The slot ring is mapped for transparent huge pages: it starts on a
  // 2 MiB boundary, and its last slot (past a whole number of huge pages
  // for 1000 slots) keeps its bytes like the first.
  DedupeDictionary s(1000), r(1000, DedupeDictionary::Role::receiver);
  std::vector<uint8_t> page(kPageSize);
  for (uint32_t i = 0; i < 1000; ++i) {
    std::memset(page.data(), int(i & 0xff), kPageSize);
    page[0] = uint8_t(i >> 8);
    EXPECT_EQ(s.insert(page.data(), page_hash(page.data())), i);
    EXPECT_EQ(r.insert(page.data(), page_hash(page.data())), i);
  }
  ASSERT_NE(r.get(0), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(r.get(0)) % (2u << 20), 0u);
  ASSERT_NE(r.get(999), nullptr);
  EXPECT_EQ(r.get(999)[0], uint8_t(999 >> 8));
  EXPECT_EQ(r.get(999)[kPageSize - 1], uint8_t(999 & 0xff));
  EXPECT_EQ(s.find(page.data(), page_hash(page.data())), std::optional<uint32_t>(999));
  EXPECT_EQ(r.get(1000), nullptr);
}

TEST(DedupeDictionary, AnEndedRingServesTheNextDictionaryWithOnlyItsOwnPages) {
  // 777 slots: a size no other test uses, so the pool holds no ring of it.
  std::vector<uint8_t> page(kPageSize, 0x5a);
  const uint8_t* first = nullptr;
  const auto before = DedupeDictionary::ring_counts();
  {
    DedupeDictionary r(777, DedupeDictionary::Role::receiver);
    r.insert(page.data(), page_hash(page.data()));
    r.insert(page.data(), page_hash(page.data()));
    first = r.get(0);
  }
  const auto kept = DedupeDictionary::ring_counts();
  EXPECT_EQ(kept.mapped, before.mapped + 1);
  EXPECT_EQ(kept.kept, before.kept + 1);
  DedupeDictionary again(777, DedupeDictionary::Role::receiver);
  const auto after = DedupeDictionary::ring_counts();
  EXPECT_EQ(after.reused, before.reused + 1);
  EXPECT_EQ(after.mapped, kept.mapped);
  // The old pages are not the new dictionary's: nothing is filled yet.
  EXPECT_EQ(again.get(0), nullptr);
  EXPECT_EQ(again.get(1), nullptr);
  std::vector<uint8_t> other(kPageSize, 0x11);
  EXPECT_EQ(again.insert(other.data(), page_hash(other.data())), 0u);
  ASSERT_EQ(again.get(0), first);  // the same memory, now holding the new page
  EXPECT_EQ(std::memcmp(again.get(0), other.data(), kPageSize), 0);
}

TEST(DedupeDictionary, ReservedRingsServeTheFirstDictionariesOfTheirSize) {
  // 555 slots: a size no other test uses.
  const auto before = DedupeDictionary::ring_counts();
  DedupeDictionary::reserve(555, 2);
  const auto reserved = DedupeDictionary::ring_counts();
  EXPECT_EQ(reserved.mapped, before.mapped + 2);
  EXPECT_EQ(reserved.kept, before.kept + 2);
  {
    DedupeDictionary a(555), b(555, DedupeDictionary::Role::receiver);
    const auto taken = DedupeDictionary::ring_counts();
    EXPECT_EQ(taken.reused, before.reused + 2);
    EXPECT_EQ(taken.mapped, reserved.mapped);  // nothing mapped fresh
    std::vector<uint8_t> page(kPageSize, 0x33);
    EXPECT_EQ(a.insert(page.data(), page_hash(page.data())), 0u);
    EXPECT_EQ(a.find(page.data(), page_hash(page.data())), std::optional<uint32_t>(0));
    EXPECT_EQ(b.get(0), nullptr);
  }
  EXPECT_EQ(DedupeDictionary::ring_counts().kept, reserved.kept);  // both back in the pool
}

TEST(DedupeDictionary, HitsMissesAndEvictionFollowTheRingOnBothEnds) {
  // A sender with its index and a receiver without one, fed the same
  // pages in the same order, assign the same slots and evict in the same
  // (ring) order; every hit the sender reports names the receiver's slot
  // holding exactly those bytes; a reference model (a map of the newest
  // slot per hash) agrees with every find over a long churn, which runs
  // the index's deletions many times over.
  constexpr uint32_t kSlots = 37;
  DedupeDictionary sender(kSlots), receiver(kSlots, DedupeDictionary::Role::receiver);
  auto pages = mm::test::corpus(PageKind::random, 200);
  std::unordered_map<PageHash, uint32_t, PageHashHasher> model;
  std::vector<PageHash> slot_hash(kSlots);
  std::vector<bool> slot_used(kSlots, false);
  std::mt19937 rng(5);
  uint64_t hits = 0, misses = 0;
  for (int step = 0; step < 20000; ++step) {
    const size_t i = rng() % 200;
    const uint8_t* p = pages.data() + i * kPageSize;
    const PageHash h = page_hash(p);
    EXPECT_FALSE(receiver.find(p, h).has_value());  // the receiver never looks up
    const auto hit = sender.find(p, h);
    const auto m = model.find(h);
    ASSERT_EQ(hit.has_value(), m != model.end()) << "step " << step;
    if (hit) {
      ASSERT_EQ(*hit, m->second);
      ASSERT_EQ(std::memcmp(receiver.get(*hit), p, kPageSize), 0);
      ++hits;
      continue;
    }
    ++misses;
    ASSERT_EQ(sender.next(), receiver.next());
    const uint32_t s1 = sender.insert(p, h), s2 = receiver.insert(p, h);
    ASSERT_EQ(s1, s2);
    if (slot_used[s1]) {
      auto old = model.find(slot_hash[s1]);
      if (old != model.end() && old->second == s1) model.erase(old);
    }
    slot_used[s1] = true;
    slot_hash[s1] = h;
    model[h] = s1;
    ASSERT_EQ(std::memcmp(receiver.get(s2), p, kPageSize), 0);
  }
  EXPECT_GT(hits, 1000u);
  EXPECT_GT(misses, 1000u);
  EXPECT_EQ(sender.filled(), kSlots);
  EXPECT_EQ(receiver.filled(), kSlots);
  // Emptied at the same point, both start over at slot 0.
  sender.clear();
  receiver.clear();
  EXPECT_FALSE(sender.find(pages.data(), page_hash(pages.data())).has_value());
  EXPECT_EQ(receiver.get(0), nullptr);
  EXPECT_EQ(sender.insert(pages.data(), page_hash(pages.data())), 0u);
}

TEST(DedupeDictionary, ACollidingHashPointsAtTheNewestPageOnly) {
  DedupeDictionary d(4);
  auto pages = mm::test::corpus(PageKind::random, 3);
  const PageHash forged{42, 42};
  d.insert(pages.data(), forged);
  d.insert(pages.data() + kPageSize, forged);  // same hash, other bytes
  EXPECT_FALSE(d.find(pages.data(), forged).has_value());
  EXPECT_EQ(d.find(pages.data() + kPageSize, forged), std::optional<uint32_t>(1));
  // Evicting slot 0 (the older page) leaves the newer entry in place.
  for (int i = 0; i < 3; ++i) d.insert(pages.data() + 2 * kPageSize, PageHash{uint64_t(i), 7});
  EXPECT_EQ(d.find(pages.data() + kPageSize, forged), std::optional<uint32_t>(1));
  d.insert(pages.data() + 2 * kPageSize, PageHash{3, 7});  // slot 1's turn
  EXPECT_FALSE(d.find(pages.data() + kPageSize, forged).has_value());
}

TEST(PageDelta, ChangedWordsRoundTripAndCostTheirRuns) {
  auto pages = mm::test::corpus(PageKind::random, 1);
  const uint8_t* base = pages.data();
  std::mt19937 rng(9);
  std::vector<uint8_t> out(kMaxDelta), page(kPageSize), back(kPageSize);
  for (int round = 0; round < 200; ++round) {
    std::memcpy(page.data(), base, kPageSize);
    const int changes = 1 + int(rng() % 40);
    for (int k = 0; k < changes; ++k) page[rng() % kPageSize] ^= uint8_t(1 + rng() % 255);
    const size_t n = delta_encode(page.data(), base, out.data(), kMaxDelta);
    ASSERT_GT(n, 0u);
    // At most one run per changed byte, each 2..4 bytes of head and a word.
    EXPECT_LE(n, size_t(changes) * 12);
    ASSERT_TRUE(delta_apply(base, {out.data(), n}, back.data()));
    ASSERT_EQ(std::memcmp(back.data(), page.data(), kPageSize), 0) << "round " << round;
    // In place over a copy of the base as well.
    std::memcpy(back.data(), base, kPageSize);
    ASSERT_TRUE(delta_apply(back.data(), {out.data(), n}, back.data()));
    ASSERT_EQ(std::memcmp(back.data(), page.data(), kPageSize), 0);
  }
  // Four isolated words: four runs of 1 + 1 + 8 bytes (the first skip and
  // the gaps are below 128 words).
  std::memcpy(page.data(), base, kPageSize);
  for (size_t w : {3u, 70u, 130u, 200u}) page[8 * w] ^= 1;
  EXPECT_EQ(delta_encode(page.data(), base, out.data(), kMaxDelta), 4u * 10);
  // Equal pages have no delta; a whole new page only fits the full limit.
  EXPECT_EQ(delta_encode(base, base, out.data(), kMaxDelta), 0u);
  auto other = mm::test::corpus(PageKind::random, 2);
  EXPECT_EQ(delta_encode(other.data() + kPageSize, base, out.data(), 2048), 0u);
  const size_t whole = delta_encode(other.data() + kPageSize, base, out.data(), kMaxDelta);
  ASSERT_GT(whole, kPageSize);
  ASSERT_TRUE(delta_apply(base, {out.data(), whole}, back.data()));
  EXPECT_EQ(std::memcmp(back.data(), other.data() + kPageSize, kPageSize), 0);
}

TEST(PageDelta, MalformedBodiesAreRefused) {
  auto pages = mm::test::corpus(PageKind::random, 1);
  std::vector<uint8_t> out(kPageSize);
  auto bad = [&](std::vector<uint8_t> d) { return !delta_apply(pages.data(), d, out.data()); };
  std::vector<uint8_t> word(8, 7);
  auto run = [&](std::vector<uint8_t> head, size_t words) {
    for (size_t i = 0; i < words; ++i) head.insert(head.end(), word.begin(), word.end());
    return head;
  };
  EXPECT_FALSE(bad(run({0, 1}, 1)));
  EXPECT_FALSE(bad(run({0xff, 0x03, 1}, 1)));       // skip 511: the last word
  EXPECT_TRUE(bad(run({0x80, 0x04, 1}, 1)));        // skip 512: past the end
  EXPECT_TRUE(bad(run({0, 0}, 0)));                 // count 0
  EXPECT_TRUE(bad(run({0xff, 0x03, 2}, 2)));        // a run past the end
  EXPECT_TRUE(bad(run({0, 2}, 1)));                 // words cut
  EXPECT_TRUE(bad({0x80}));                         // a number cut
  EXPECT_TRUE(bad({0, 0x80, 0x80, 0x01}));          // a number of three bytes
  auto two = run({0, 1}, 1);
  two.push_back(5);
  EXPECT_TRUE(bad(two));                            // a cut second run
  // Random bodies: refused or applied, never past the page.
  std::mt19937 rng(4);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> d(1 + rng() % 40);
    for (auto& b : d) b = uint8_t(rng() % 4 == 0 ? rng() : rng() % 4);
    (void)delta_apply(pages.data(), d, out.data());
  }
}

TEST(DedupeDictionary, TheBaseIndexNamesEachPagesNewestSlotWhileTheRingHoldsIt) {
  // A sender made by_page, fed pages under 60 keys through a 23-slot ring:
  // find_base agrees with a model (the newest slot per key, dropped when
  // the ring overwrites it) at every step.
  constexpr uint32_t kSlots = 23;
  DedupeDictionary d(kSlots, DedupeDictionary::Role::sender, true);
  DedupeDictionary plain(kSlots);
  auto pages = mm::test::corpus(PageKind::random, 64);
  std::unordered_map<uint64_t, uint32_t> model;
  std::vector<uint64_t> slot_key(kSlots, DedupeDictionary::kNoKey);
  std::mt19937 rng(11);
  uint64_t found = 0;
  for (int step = 0; step < 20000; ++step) {
    const uint64_t key = (uint64_t(rng() % 2) << 48) | (rng() % 30);
    for (uint64_t k : {key, (key + 7) % 30}) {
      const auto b = d.find_base(k);
      const auto m = model.find(k);
      ASSERT_EQ(b.has_value(), m != model.end()) << "step " << step;
      if (b) {
        ASSERT_EQ(*b, m->second);
        ++found;
      }
    }
    const uint8_t* p = pages.data() + (step % 64) * kPageSize;
    const uint32_t slot = d.insert(p, PageHash{uint64_t(step), 1}, key);
    if (slot_key[slot] != DedupeDictionary::kNoKey) {
      auto old = model.find(slot_key[slot]);
      if (old != model.end() && old->second == slot) model.erase(old);
    }
    if (auto prev = model.find(key); prev != model.end()) slot_key[prev->second] = DedupeDictionary::kNoKey;
    slot_key[slot] = key;
    model[key] = slot;
    ASSERT_EQ(std::memcmp(d.slot_bytes(slot), p, kPageSize), 0);
  }
  EXPECT_GT(found, 5000u);
  // Without by_page there is no base; clear() empties the base index.
  plain.insert(pages.data(), page_hash(pages.data()), 5);
  EXPECT_FALSE(plain.find_base(5).has_value());
  d.clear();
  for (uint64_t k = 0; k < 30; ++k) EXPECT_FALSE(d.find_base(k).has_value());
}
