// Proves the page pipeline of a multifd stream end to end without QEMU:
// packets encoded by the source's PageEncoder under every policy decode at
// the destination to exactly the pages QEMU sent (minus the unchanged ones,
// which are omitted), the counters say which path each page took, and
// every kind of corruption or lie in a message is refused with a reason
// before any page is handed back.
#include <gtest/gtest.h>

#include <random>

#include "PageCorpus.hpp"
#include "dataplane/pages/PagePipeline.hpp"

using namespace mm::pages;
using mm::test::PageKind;

namespace {

struct Codecs {
  Lz4Codec lz4;
  ZstdCodec zstd;
  PageCodec* get(CodecKind k) {
    if (k == CodecKind::lz4) return &lz4;
    if (k == CodecKind::zstd) return &zstd;
    return nullptr;
  }
};

struct Packet {
  std::vector<uint64_t> offsets;
  std::vector<uint8_t> pages;
  PacketView view(uint32_t flags = 0) const {
    PacketView v;
    v.flags = flags;
    v.pages_alloc = 128;
    v.packet_num = 7;
    v.ramblock = "pc.ram";
    v.offsets = offsets;
    v.pages = pages.data();
    return v;
  }
};

// 128 pages of a kind, at offsets first..first+127 pages.
Packet packet_of(PageKind kind, uint64_t first_page, uint64_t seed = 1) {
  Packet p;
  p.pages.resize(128 * kPageSize);
  for (size_t i = 0; i < 128; ++i) {
    mm::test::fill_page(p.pages.data() + i * kPageSize, kind, seed * 1000 + first_page + i);
    p.offsets.push_back((first_page + i) * kPageSize);
  }
  return p;
}

struct Pair {
  Codecs src_codecs, dst_codecs;
  UnchangedFilter filter;
  PageEncoder enc;
  PageDecoder dec;
  std::vector<uint8_t> msg = std::vector<uint8_t>(PageEncoder::max_message(128));
  explicit Pair(const PagePolicy& pol)
      : enc(pol, src_codecs.get(pol.codec), &filter),
        dec([this](CodecKind k, std::string* why) -> PageCodec* {
          auto* c = dst_codecs.get(k);
          if (!c && why) *why = "not here";
          return c;
        }) {}
  std::span<const uint8_t> encode(const Packet& p, uint32_t epoch, bool may_skip = true) {
    mm::wire::RecordWriter w(msg);
    enc.encode(p.view(), epoch, may_skip, w);
    return {msg.data(), w.size()};
  }
  // The decoder checks PAGE_SAME records against what it delivered (a
  // destination told that the source's filter is on).
  DeliveredTable delivered;
  void check_same() { dec.set_delivered(&delivered); }
  // An empty SYNC packet of `epoch` through both ends: the decoder's epoch
  // (its SYNC count) follows the encoder's.
  void sync(uint32_t epoch) {
    const Packet none;
    mm::wire::RecordWriter w(msg);
    enc.encode(none.view(0x1 /* QEMU 7.2 MULTIFD_FLAG_SYNC */), epoch, false, w);
    DecodedPacket d;
    ASSERT_EQ(dec.decode({msg.data(), w.size()}, d), "");
  }
};

// The decoded packet holds exactly the given pages of p (by index).
void expect_pages(const DecodedPacket& d, const Packet& p, const std::vector<size_t>& idx) {
  ASSERT_EQ(d.offsets.size(), idx.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    EXPECT_EQ(d.offsets[k], p.offsets[idx[k]]);
    EXPECT_EQ(0, std::memcmp(d.pages.data() + k * kPageSize, p.pages.data() + idx[k] * kPageSize, kPageSize))
        << "page " << k;
  }
}

std::vector<size_t> all(size_t n = 128) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

}  // namespace

TEST(PagePipeline, EveryPolicyAndCorpusRoundTripsExactly) {
  for (CodecKind codec : {CodecKind::raw, CodecKind::lz4, CodecKind::zstd}) {
    for (int features = 0; features < 8; ++features) {
      PagePolicy pol;
      pol.codec = codec;
      pol.zero = features & 1;
      pol.unchanged = features & 2;
      pol.dedupe = features & 4;
      pol.dedupe_slots = 64;
      Pair pair(pol);
      for (PageKind kind : {PageKind::zero, PageKind::text, PageKind::code, PageKind::random, PageKind::mix}) {
        const Packet p = packet_of(kind, uint64_t(kind) * 1000);
        DecodedPacket d;
        ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "")
            << to_string(codec) << " features " << features << " " << mm::test::name(kind);
        expect_pages(d, p, all());
        EXPECT_EQ(d.ramblock, "pc.ram");
        EXPECT_EQ(d.packet_num, 7u);
      }
      const PageStats& s = pair.enc.stats();
      EXPECT_EQ(s.pages, 5u * 128);
      EXPECT_EQ(s.zero + s.unchanged + s.dedupe_hits + s.compressed + s.raw + s.delta, s.pages);
      EXPECT_EQ(pair.dec.stats().written, s.pages);
      EXPECT_EQ(s.zero == 0, !pol.zero);
      EXPECT_EQ(s.compressed == 0, codec == CodecKind::raw);
      if (!pol.dedupe) {
        EXPECT_EQ(s.dedupe_hits, 0u);
      }
      EXPECT_EQ(s.unchanged, 0u);  // nothing was sent before
    }
  }
}

TEST(PagePipeline, UnchangedFilterIsOnByDefaultAndCheckedOrOffWhenAsked) {
  Packet p = packet_of(PageKind::text, 0);
  {
    // The default: a page resent unchanged in a later epoch goes as a
    // PAGE_SAME, which a destination that keeps a table checks.
    PagePolicy pol;
    EXPECT_TRUE(pol.unchanged);
    Pair pair(pol);
    pair.check_same();
    DecodedPacket d;
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 0), d), "");
    pair.sync(0);
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
    EXPECT_EQ(pair.enc.stats().unchanged, 128u);
    EXPECT_EQ(pair.dec.stats().unchanged, 128u);
    EXPECT_EQ(pair.dec.stats().unchanged_refused, 0u);
    EXPECT_TRUE(d.offsets.empty());  // the rebuilt packet omits them
  }
  {
    PagePolicy pol;
    pol.unchanged = false;
    Pair pair(pol);
    DecodedPacket d;
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 2), d), "");
    expect_pages(d, p, all());
    EXPECT_EQ(pair.enc.stats().unchanged + pair.enc.stats().unchanged_held, 0u);
  }
}

TEST(PagePipeline, UnchangedPagesAreOmittedOnlyInALaterEpochWithTheGateOpen) {
  PagePolicy pol;
  pol.unchanged = true;
  Pair pair(pol);
  pair.check_same();
  Packet p = packet_of(PageKind::text, 0);
  DecodedPacket d;
  pair.sync(0);
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  // Same epoch again: sent in full.
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  expect_pages(d, p, all());
  // Next epoch, gate closed (other channels lag): sent in full, counted as held.
  pair.sync(1);
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 2, false), d), "");
  expect_pages(d, p, all());
  EXPECT_EQ(pair.enc.stats().unchanged_held, 128u);
  // Gate open: pages 3 and 77 changed, the rest are omitted, each SAME
  // checked against what the destination delivered in epoch 2.
  pair.sync(2);
  mm::test::fill_page(p.pages.data() + 3 * kPageSize, PageKind::random, 99);
  mm::test::fill_page(p.pages.data() + 77 * kPageSize, PageKind::random, 98);
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 3), d), "");
  expect_pages(d, p, {3, 77});
  EXPECT_EQ(d.omitted, 126u);
  EXPECT_EQ(pair.enc.stats().unchanged, 126u);
  EXPECT_EQ(pair.dec.stats().unchanged, 126u);
  EXPECT_EQ(pair.dec.stats().unchanged_refused, 0u);
}

TEST(PagePipeline, ASameRecordIsCheckedAgainstWhatTheDestinationDelivered) {
  PagePolicy pol;
  pol.unchanged = true;
  pol.dedupe = false;
  Pair pair(pol);
  pair.check_same();
  Packet p = packet_of(PageKind::text, 0);
  DecodedPacket d;
  pair.sync(0);
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  pair.sync(1);
  const auto m = pair.encode(p, 2);
  ASSERT_EQ(pair.enc.stats().unchanged, 128u);
  // The first record after MULTIFD_BEGIN (23 + "pc.ram") is a SAME: its hash
  // follows the code and the page offset.
  std::vector<uint8_t> bad(m.begin(), m.end());
  ASSERT_EQ(bad[29], uint8_t(mm::wire::RecordType::page_same));
  bad[29 + 1 + 8] ^= 1;
  std::string why = pair.dec.decode(bad, d);
  EXPECT_NE(why.find("PAGE_SAME for page at offset 0 of pc.ram in epoch 2 refused: the page was last delivered "
                     "with other bytes"),
            std::string::npos)
      << why;
  EXPECT_EQ(pair.dec.stats().unchanged_refused, 1u);
  // The message as sent passes ...
  std::vector<uint8_t> good(m.begin(), m.end());
  ASSERT_EQ(pair.dec.decode(good, d), "");
  EXPECT_EQ(d.omitted, 128u);
  // ... but not at a destination that keeps no record, nor once the
  // session could not order its epochs.
  PageDecoder blind([](CodecKind, std::string*) -> PageCodec* { return nullptr; });
  why = blind.decode(good, d);
  EXPECT_NE(why.find("not told that the source's unchanged filter is on"), std::string::npos) << why;
  EXPECT_EQ(blind.stats().unchanged_refused, 1u);
  pair.delivered.distrust("the main channel went opaque");
  why = pair.dec.decode(good, d);
  EXPECT_NE(why.find("refused: the main channel went opaque"), std::string::npos) << why;
}

TEST(PagePipeline, DedupeRefsResolveThroughTheMirroredDictionary) {
  PagePolicy pol;
  pol.codec = CodecKind::raw;
  pol.unchanged = false;
  pol.dedupe_slots = 16;
  Pair pair(pol);
  // 128 pages that are 4 distinct pages repeated: 4 sent, 124 refs.
  Packet p = packet_of(PageKind::random, 0);
  for (size_t i = 4; i < 128; ++i) {
    std::memcpy(p.pages.data() + i * kPageSize, p.pages.data() + (i % 4) * kPageSize, kPageSize);
  }
  DecodedPacket d;
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  expect_pages(d, p, all());
  EXPECT_EQ(pair.enc.stats().dedupe_hits, 124u);
  EXPECT_EQ(pair.dec.stats().dedupe_hits, 124u);
  // Eviction keeps both ends in step across packets: 200 distinct pages
  // through a 16-slot ring, then repeats of the last few.
  for (uint64_t round = 0; round < 2; ++round) {
    Packet q = packet_of(PageKind::random, 1000 + round * 128, 5 + round);
    ASSERT_EQ(pair.dec.decode(pair.encode(q, 2), d), "");
    expect_pages(d, q, all());
  }
}

TEST(PagePipeline, PagesSentAgainGoAsTheirChangesAndAreChecked) {
  // A packet of pages, then the same pages with four words changed in each
  // (as a partial-page write leaves them): the second goes as PAGE_DELTA
  // against the dictionary's copy, a few dozen bytes per page, and the
  // destination rebuilds every page exactly.
  PagePolicy pol;
  pol.codec = CodecKind::lz4;
  pol.dedupe_slots = 512;
  Pair pair(pol);
  Packet p = packet_of(PageKind::text, 0);
  DecodedPacket d;
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  EXPECT_EQ(pair.enc.stats().delta_bases, 0u);
  std::mt19937 rng(3);
  for (size_t i = 0; i < 128; ++i) {
    for (int k = 0; k < 4; ++k) {
      const uint64_t v = rng();
      std::memcpy(p.pages.data() + i * kPageSize + 64 * (rng() % 64), &v, 8);
    }
  }
  const uint64_t bytes_before = pair.enc.stats().record_bytes;
  auto m = pair.encode(p, 2);
  ASSERT_EQ(pair.dec.decode(m, d), "");
  expect_pages(d, p, all());
  const PageStats& s = pair.enc.stats();
  EXPECT_EQ(s.delta_bases, 128u);
  EXPECT_EQ(s.delta, 128u);
  EXPECT_LE(s.delta_bytes, 128u * 4 * 10);  // skip:1 count:1 word:8 per changed word
  EXPECT_LT(s.record_bytes - bytes_before, 128u * 100);
  EXPECT_EQ(pair.dec.stats().delta, 128u);
  EXPECT_EQ(pair.dec.stats().delta_bytes, s.delta_bytes);
  EXPECT_EQ(pair.dec.stats().verified, 256u);
  // The changed pages are the base of the next change (both ends inserted
  // them): a third round again goes as deltas and rebuilds exactly.
  for (size_t i = 0; i < 128; ++i) p.pages[i * kPageSize + 8] ^= 0x5a;
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 3), d), "");
  expect_pages(d, p, all());
  EXPECT_EQ(pair.enc.stats().delta, 256u);
  // A wrong word in a delta fails the page's hash: nothing is handed back.
  for (size_t i = 0; i < 128; ++i) p.pages[i * kPageSize + 16] ^= 0x33;
  auto m4 = pair.encode(p, 4);
  std::vector<uint8_t> bad(m4.begin(), m4.end());
  // The first record after MULTIFD_BEGIN (23 + "pc.ram") is a delta; its
  // first new word starts after the 23-byte head and two one-byte numbers.
  ASSERT_EQ(bad[29], uint8_t(mm::wire::RecordType::page_delta));
  bad[29 + 23 + 2] ^= 1;
  const std::string why = pair.dec.decode(bad, d);
  EXPECT_NE(why.find("fails its hash check (delta)"), std::string::npos) << why;
}

TEST(PagePipeline, DeltaIsOffWithoutTheDictionaryOrWhenTurnedOff) {
  for (int off : {0, 1}) {
    PagePolicy pol;
    pol.codec = CodecKind::lz4;
    pol.dedupe_slots = 512;
    (off ? pol.delta : pol.dedupe) = false;
    Pair pair(pol);
    Packet p = packet_of(PageKind::mix, 0);
    DecodedPacket d;
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
    for (size_t i = 0; i < 128; ++i) p.pages[i * kPageSize + 100] ^= 1;
    ASSERT_EQ(pair.dec.decode(pair.encode(p, 2), d), "");
    expect_pages(d, p, all());
    EXPECT_EQ(pair.enc.stats().delta, 0u);
    EXPECT_EQ(pair.enc.stats().delta_bases, 0u);
  }
}

TEST(PagePipeline, ADeltaLargerThanTheCompressedPageIsNotSent) {
  // Text pages whose words all changed: the delta would be the whole page,
  // LZ4 makes it far smaller, so the page goes compressed (its base found).
  PagePolicy pol;
  pol.codec = CodecKind::lz4;
  pol.dedupe_slots = 512;
  Pair pair(pol);
  Packet p = packet_of(PageKind::text, 0, 1);
  DecodedPacket d;
  ASSERT_EQ(pair.dec.decode(pair.encode(p, 1), d), "");
  const Packet q = packet_of(PageKind::text, 0, 2);
  ASSERT_EQ(pair.dec.decode(pair.encode(q, 2), d), "");
  expect_pages(d, q, all());
  EXPECT_EQ(pair.enc.stats().delta_bases, 128u);
  EXPECT_EQ(pair.enc.stats().delta, 0u);
  EXPECT_EQ(pair.enc.stats().compressed, 256u);
}

TEST(PagePipeline, CorruptOrLyingMessagesAreRefusedWithAReason) {
  PagePolicy pol;
  pol.dedupe_slots = 16;
  const Packet p = packet_of(PageKind::mix, 0);
  auto fresh = [&] { return std::make_unique<Pair>(pol); };
  {
    auto pair = fresh();
    auto m = pair->encode(p, 1);
    std::vector<uint8_t> bad(m.begin(), m.end());
    // Truncated anywhere: refused, never a crash.
    for (size_t n : {size_t(1), size_t(20), bad.size() / 2, bad.size() - 1}) {
      DecodedPacket d;
      auto again = fresh();
      again->encode(p, 1);
      EXPECT_NE(again->dec.decode({bad.data(), n}, d), "") << n;
    }
  }
  {
    // A flipped bit in a page body fails that page's hash (or its codec).
    auto pair = fresh();
    auto m = pair->encode(p, 1);
    std::vector<uint8_t> bad(m.begin(), m.end());
    bad[bad.size() / 2] ^= 0x01;
    DecodedPacket d;
    const std::string why = pair->dec.decode(bad, d);
    EXPECT_NE(why, "");
  }
  {
    // A REF to a slot never filled.
    std::vector<uint8_t> buf(4096);
    mm::wire::RecordWriter w(buf);
    w.put_multifd_begin({0, 128, 1, 16, "pc.ram"});
    w.put_page_ref(0, 1, 9);
    const uint64_t off[] = {0};
    w.put_multifd_end({1, offsets_digest(off)});
    auto pair = fresh();
    DecodedPacket d;
    EXPECT_NE(pair->dec.decode({buf.data(), w.size()}, d).find("holds no page"), std::string::npos);
  }
  {
    // A DELTA against a slot never filled, and one that breaks the format.
    std::vector<uint8_t> buf(4096);
    mm::wire::RecordWriter w(buf);
    w.put_multifd_begin({0, 128, 1, 16, "pc.ram"});
    const uint8_t delta[] = {0, 1, 1, 2, 3, 4, 5, 6, 7, 8};
    w.put_page_delta(0, 1, 3, delta);
    const uint64_t off[] = {0};
    w.put_multifd_end({1, offsets_digest(off)});
    auto pair = fresh();
    DecodedPacket d;
    EXPECT_NE(pair->dec.decode({buf.data(), w.size()}, d).find("holds no page"), std::string::npos);
    // Slot 0 filled by a first page; then a run past the page's end.
    auto m = pair->encode(p, 1);
    ASSERT_EQ(pair->dec.decode(m, d), "");
    mm::wire::RecordWriter w2(buf);
    w2.put_multifd_begin({0, 128, 1, 16, "pc.ram"});
    const uint8_t past[] = {0xff, 0x03, 1, 1, 2, 3, 4, 5, 6, 7, 8};  // skip 511, count 1 is fine ...
    w2.put_page_delta(0, 1, 0, past);
    w2.put_multifd_end({1, offsets_digest(off)});
    EXPECT_NE(pair->dec.decode({buf.data(), w2.size()}, d).find("hash check (delta)"), std::string::npos);
    mm::wire::RecordWriter w3(buf);
    w3.put_multifd_begin({0, 128, 1, 16, "pc.ram"});
    const uint8_t beyond[] = {0x80, 0x04, 1, 1, 2, 3, 4, 5, 6, 7, 8};  // ... skip 512 is past the end
    w3.put_page_delta(0, 1, 0, beyond);
    w3.put_multifd_end({1, offsets_digest(off)});
    EXPECT_NE(pair->dec.decode({buf.data(), w3.size()}, d).find("malformed"), std::string::npos);
  }
  {
    // END that does not match the records (a dropped page record).
    std::vector<uint8_t> buf(4096);
    mm::wire::RecordWriter w(buf);
    w.put_multifd_begin({0, 128, 1, 0, "pc.ram"});
    w.put_page_zero(0);
    const uint64_t off[] = {0, 4096};
    w.put_multifd_end({2, offsets_digest(off)});
    auto pair = fresh();
    DecodedPacket d;
    EXPECT_NE(pair->dec.decode({buf.data(), w.size()}, d).find("MULTIFD_END"), std::string::npos);
    // Same count, other offsets.
    mm::wire::RecordWriter w2(buf);
    w2.put_multifd_begin({0, 128, 1, 0, "pc.ram"});
    w2.put_page_zero(0);
    const uint64_t other[] = {8192};
    w2.put_multifd_end({1, offsets_digest(other)});
    EXPECT_NE(pair->dec.decode({buf.data(), w2.size()}, d).find("digest"), std::string::npos);
  }
  {
    // Absurd sizes from a peer: pages_alloc, dictionary.
    std::vector<uint8_t> buf(4096);
    DecodedPacket d;
    auto pair = fresh();
    mm::wire::RecordWriter w(buf);
    w.put_multifd_begin({0, 1u << 20, 1, 0, "pc.ram"});
    w.put_multifd_end({0, offsets_digest({})});
    EXPECT_NE(pair->dec.decode({buf.data(), w.size()}, d).find("pages_alloc"), std::string::npos);
    mm::wire::RecordWriter w2(buf);
    w2.put_multifd_begin({0, 128, 1, 1u << 30, "pc.ram"});
    w2.put_multifd_end({0, offsets_digest({})});
    EXPECT_NE(pair->dec.decode({buf.data(), w2.size()}, d).find("dictionary"), std::string::npos);
  }
  {
    // A codec the destination lacks.
    std::vector<uint8_t> buf(8192);
    mm::wire::RecordWriter w(buf);
    const uint8_t junk[10] = {1};
    w.put_multifd_begin({0, 128, 1, 0, "pc.ram"});
    w.put_page_compressed(mm::wire::RecordType::page_deflate, 0, 1, junk);
    const uint64_t off[] = {0};
    w.put_multifd_end({1, offsets_digest(off)});
    auto pair = fresh();
    DecodedPacket d;
    EXPECT_NE(pair->dec.decode({buf.data(), w.size()}, d).find("deflate"), std::string::npos);
  }
}

TEST(PagePipeline, RandomBytesNeverCrashTheDecoder) {
  std::mt19937_64 rng(42);
  PagePolicy pol;
  pol.dedupe_slots = 64;  // a fresh pair per case: keep allocations small
  Pair pair(pol);
  const Packet p = packet_of(PageKind::mix, 0);
  auto m = pair.encode(p, 1);
  const std::vector<uint8_t> good(m.begin(), m.end());
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> bad = good;
    const int flips = 1 + int(rng() % 8);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] = uint8_t(rng());
    bad.resize(1 + rng() % bad.size());
    Pair fresh(pol);
    DecodedPacket d;
    if (!fresh.dec.decode(bad, d).empty()) ++refused;
  }
  // Nearly all are caught; a flip only in fields no check covers (packet
  // number, flags) with no cut passes, as it should: the pages are intact.
  EXPECT_GT(refused, 1900);
}

namespace {
// The decoded packet's k-th page, wherever the decoder left it.
void expect_pages_in_place(const DecodedPacket& d, const Packet& p) {
  ASSERT_EQ(d.offsets.size(), p.offsets.size());
  ASSERT_EQ(d.page_at.size(), p.offsets.size());
  for (size_t k = 0; k < p.offsets.size(); ++k) {
    EXPECT_EQ(d.offsets[k], p.offsets[k]);
    EXPECT_EQ(0, std::memcmp(d.page(k), p.pages.data() + k * kPageSize, kPageSize)) << "page " << k;
  }
}
}  // namespace

TEST(PagePipeline, InPlaceDecodingGivesTheSamePagesWithoutCopyingThem) {
  for (CodecKind codec : {CodecKind::raw, CodecKind::lz4, CodecKind::zstd}) {
    PagePolicy pol;
    pol.codec = codec;
    pol.dedupe_slots = 1024;
    Codecs src, dst;
    PageEncoder enc(pol, src.get(codec), nullptr);
    PageDecoder dec([&](CodecKind k, std::string*) -> PageCodec* { return dst.get(k); }, /*in_place=*/true);
    std::vector<uint8_t> msg(PageEncoder::max_message(128));
    for (PageKind kind : {PageKind::zero, PageKind::random, PageKind::mix, PageKind::mix}) {
      const Packet p = packet_of(kind, 0);  // the second mix packet: all REFs
      mm::wire::RecordWriter w(msg);
      enc.encode(p.view(), 1, true, w);
      DecodedPacket d;
      ASSERT_EQ(dec.decode({msg.data(), w.size()}, d), "") << to_string(codec);
      expect_pages_in_place(d, p);
      for (size_t k = 0; k < d.page_at.size(); ++k) {
        const bool in_message = d.page(k) >= msg.data() && d.page(k) < msg.data() + w.size();
        if (is_zero_page(p.pages.data() + k * kPageSize)) {
          EXPECT_EQ(d.page(k), zero_page());
        } else if (codec == CodecKind::raw && kind == PageKind::random) {
          EXPECT_TRUE(in_message) << "a RAW page is checked and handed on where it lies";
        }
      }
    }
    EXPECT_GT(dec.stats().dedupe_hits, 0u);
  }
}

TEST(PagePipeline, InPlaceRefToASlotTheSamePacketOverwritesIsCopiedFirst) {
  // A 4-slot dictionary: a packet whose first pages repeat the previous
  // packet's last ones (REFs to slots the following RAW pages evict).
  PagePolicy pol;
  pol.codec = CodecKind::raw;
  pol.dedupe_slots = 4;
  Codecs c;
  PageEncoder enc(pol, nullptr, nullptr);
  PageDecoder dec([&](CodecKind k, std::string*) -> PageCodec* { return c.get(k); }, /*in_place=*/true);
  std::vector<uint8_t> msg(PageEncoder::max_message(128));
  const Packet a = packet_of(PageKind::random, 0, 1);
  Packet b = packet_of(PageKind::random, 128, 2);
  for (size_t i = 0; i < 4; ++i) {
    std::memcpy(b.pages.data() + i * kPageSize, a.pages.data() + (124 + i) * kPageSize, kPageSize);
  }
  for (const Packet* p : {&a, static_cast<const Packet*>(&b)}) {
    mm::wire::RecordWriter w(msg);
    enc.encode(p->view(), 1, true, w);
    DecodedPacket d;
    ASSERT_EQ(dec.decode({msg.data(), w.size()}, d), "");
    expect_pages_in_place(d, *p);
  }
  EXPECT_EQ(enc.stats().dedupe_hits, 4u);
}

// Warm re-migration: a source whose encoder has the destination's page
// table sends the pages it lists as PAGE_STORED; a destination decoder with
// that image fills them from it, byte-identical; one without the image, or
// with another image, refuses the message and counts it.
namespace {

std::shared_ptr<const mm::store::Image> image_of(mm::store::Budget& budget, const Packet& p, const std::string& vm,
                                                 bool inflate = false) {
  PagePolicy pol;
  pol.dedupe = false;
  Pair pair(pol);
  auto cap = std::make_unique<mm::store::Capture>(budget, mm::store::Backing::memory, "");
  pair.enc.set_capture(cap.get());
  pair.encode(p, 1);
  std::vector<std::unique_ptr<mm::store::Capture>> caps;
  caps.push_back(std::move(cap));
  std::string why;
  auto img = mm::store::Image::merge(vm, std::move(caps), budget, why);
  EXPECT_TRUE(img) << why;
  if (img && inflate) img->inflate([&](CodecKind k) { return pair.src_codecs.get(k); }, budget);
  return img;
}

// The pages of `before` with three of them changed a byte since.
Packet three_changed(const Packet& before) {
  Packet now = before;
  for (size_t k : {3u, 50u, 127u}) now.pages[k * kPageSize + 9] ^= 0x5a;
  return now;
}

}  // namespace

TEST(PagePipeline, PagesChangedSinceTheImageGoAsDeltasAgainstIt) {
  // Both hosts hold the same image of the VM (the source's own, inflated,
  // and the destination's); three pages changed a word since: they go as
  // PAGE_DELTA against the destination's image, the rest as PAGE_STORED.
  mm::store::Budget budget(64 << 20);
  const Packet before = packet_of(PageKind::text, 0);
  auto img = image_of(budget, before, "vm", true);
  const mm::store::PageTable table = mm::store::PageTable::of(*img);
  const Packet now = three_changed(before);
  PagePolicy pol;
  Pair pair(pol);
  pair.enc.set_table(&table);
  pair.enc.set_base_image(img);
  pair.dec.set_image(img);
  const auto msg = pair.encode(now, 2);
  DecodedPacket d;
  ASSERT_EQ(pair.dec.decode(msg, d), "");
  expect_pages(d, now, all());
  EXPECT_EQ(pair.enc.stats().stored, 125u);
  EXPECT_EQ(pair.enc.stats().delta_image, 3u);
  EXPECT_EQ(pair.dec.stats().delta_image, 3u);
  EXPECT_EQ(pair.dec.stats().verified, 128u);
  EXPECT_LT(msg.size(), 3 * 64 + 125 * 32 + 64);
  // A destination without the image, or with another image of the VM,
  // refuses them (the page's hash would not check).
  Pair lost(pol);
  DecodedPacket d2;
  EXPECT_NE(lost.dec.decode(msg, d2), "");
  auto other = image_of(budget, packet_of(PageKind::text, 0, 9), "vm", true);
  Pair wrong(pol);
  wrong.dec.set_image(other);
  EXPECT_NE(wrong.dec.decode(msg, d2), "");
  // A delta against the image alone: refused without one, by its hash with
  // another.
  std::vector<uint8_t> buf(4096);
  mm::wire::RecordWriter w(buf);
  w.put_multifd_begin({0, 128, 1, 16, "pc.ram"});
  const uint8_t delta[] = {1, 1, 1, 2, 3, 4, 5, 6, 7, 8};
  const PageHash h = page_hash(now.pages.data());
  w.put_page_delta(0, record_hash(h), mm::wire::kDeltaImageSlot, delta);
  const uint64_t off[] = {0};
  w.put_multifd_end({1, offsets_digest(off)});
  Pair none(pol);
  EXPECT_NE(none.dec.decode({buf.data(), w.size()}, d2).find("holds no image"), std::string::npos);
  EXPECT_EQ(none.dec.stats().stored_refused, 1u);
  Pair bad(pol);
  bad.dec.set_image(img);
  EXPECT_NE(bad.dec.decode({buf.data(), w.size()}, d2).find("hash check (delta)"), std::string::npos);
}

TEST(PagePipeline, StoredPagesComeFromTheDestinationsImage) {
  mm::store::Budget budget(64 << 20);
  const Packet before = packet_of(PageKind::text, 0);
  auto img = image_of(budget, before, "vm");
  ASSERT_EQ(img->info().pages_held, 128u);
  const mm::store::PageTable table = mm::store::PageTable::of(*img);
  // The guest changed three pages since.
  const Packet now = three_changed(before);

  PagePolicy pol;
  Pair pair(pol);
  pair.enc.set_table(&table);
  pair.dec.set_image(img);
  const auto msg = pair.encode(now, 2);
  DecodedPacket d;
  ASSERT_EQ(pair.dec.decode(msg, d), "");
  expect_pages(d, now, all());
  EXPECT_EQ(pair.enc.stats().stored, 125u);
  EXPECT_EQ(pair.dec.stats().stored, 125u);
  EXPECT_EQ(pair.dec.stats().verified, 128u);
  EXPECT_LT(msg.size(), 3 * (kPageSize + 64) + 125 * 32);

  // A destination without the image refuses the records.
  Pair lost(pol);
  DecodedPacket d2;
  EXPECT_EQ(lost.dec.decode(msg, d2), "PAGE_STORED but this destination holds no image of the VM");
  EXPECT_EQ(lost.dec.stats().stored_refused, 1u);
  EXPECT_EQ(lost.dec.stats().written, 0u);

  // ... and so does one whose image of the VM holds other bytes for them.
  auto other = image_of(budget, packet_of(PageKind::text, 0, 9), "vm");
  Pair wrong(pol);
  wrong.dec.set_image(other);
  DecodedPacket d3;
  EXPECT_NE(wrong.dec.decode(msg, d3).find("does not match this host's image"), std::string::npos);
  EXPECT_EQ(wrong.dec.stats().stored_refused, 1u);
}

TEST(PageTable, RoundTripsInChunksAndRefusesMalformedOnes) {
  mm::store::Budget budget(64 << 20);
  auto img = image_of(budget, packet_of(PageKind::random, 70000 - 64), "vm");  // pages up to 70063: two chunks
  const mm::store::PageTable t = mm::store::PageTable::of(*img);
  const auto chunks = t.encode();
  ASSERT_EQ(chunks.size(), 2u);
  mm::store::PageTable in;
  for (const auto& c : chunks) ASSERT_EQ(in.add(c), "");
  ASSERT_TRUE(in.complete());
  EXPECT_EQ(in.generation(), img->info().generation);
  ASSERT_NE(in.block("pc.ram"), nullptr);
  EXPECT_EQ(in.block("pc.ram")->hash, t.block("pc.ram")->hash);
  EXPECT_EQ(in.pages_held(), 128u);
  EXPECT_EQ(in.add(chunks[0]), "STORE_TABLE after the table's last chunk");
  // Out of order, cut short, a bit flipped in the frame.
  mm::store::PageTable a;
  EXPECT_NE(a.add(chunks[1]), "");
  mm::store::PageTable b;
  EXPECT_NE(b.add(std::span<const uint8_t>(chunks[0]).first(20)), "");
  auto bad = chunks[0];
  bad.back() ^= 1;
  mm::store::PageTable c;
  EXPECT_NE(c.add(bad), "");
  EXPECT_FALSE(c.complete());
}

TEST(PagePipeline, TheDestinationLogsWhatItHandsBackAndItsImageReadsBackAsThePages) {
  // Zero, text, repeated and then partly rewritten pages (REF and DELTA
  // records) through an in-place decoder with a capture: the image merged
  // from it reads back as the last version of every page.
  PagePolicy pol;
  pol.codec = CodecKind::lz4;
  pol.dedupe_slots = 512;
  Pair pair(pol);
  PageDecoder dec([&](CodecKind k, std::string*) { return pair.dst_codecs.get(k); }, true);
  mm::store::Budget budget(64 << 20);
  auto cap = std::make_unique<mm::store::Capture>(budget, mm::store::Backing::memory, "");
  dec.set_capture(cap.get());
  Packet p = packet_of(PageKind::mix, 0);
  for (size_t i = 100; i < 128; ++i) std::memcpy(p.pages.data() + i * kPageSize, p.pages.data() + 40 * kPageSize, kPageSize);
  DecodedPacket d;
  ASSERT_EQ(dec.decode(pair.encode(p, 0, false), d), "");
  for (size_t i = 0; i < 128; i += 3) p.pages[i * kPageSize + 24] ^= 0x77;
  // Sent again (its SYNC flag ends epoch 0 for the decoder: the second
  // packet's writes are newer).
  mm::wire::RecordWriter w(pair.msg);
  pair.enc.encode(p.view(0x1), 1, false, w);
  std::vector<uint8_t> again(pair.msg.begin(), pair.msg.begin() + long(w.size()));
  // (the encoder's epoch is the caller's; the decoder counts SYNCs: the
  // first packet had none, so both were epoch 0 for it -- a later entry of
  // the same flow and epoch is a later write)
  ASSERT_EQ(dec.decode(again, d), "");
  EXPECT_GT(dec.stats().delta, 0u);
  EXPECT_GT(dec.stats().dedupe_hits, 0u);
  EXPECT_GT(dec.stats().zero, 0u);
  EXPECT_EQ(cap->entries(), 256u);
  std::vector<std::unique_ptr<mm::store::Capture>> caps;
  caps.push_back(std::move(cap));
  std::string why;
  auto img = mm::store::Image::merge("vm", std::move(caps), budget, why);
  ASSERT_TRUE(img) << why;
  const auto* b = img->block("pc.ram");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(img->info().pages_held, 128u);
  std::vector<uint8_t> out(kPageSize);
  const auto codecs = [&](CodecKind k) -> PageCodec* { return pair.dst_codecs.get(k); };
  for (size_t i = 0; i < 128; ++i) {
    ASSERT_EQ(img->read(b->pages[i], out.data(), codecs), "") << i;
    EXPECT_EQ(std::memcmp(out.data(), p.pages.data() + i * kPageSize, kPageSize), 0) << i;
  }
}
