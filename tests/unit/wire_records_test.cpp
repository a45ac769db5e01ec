// Proves message records are written and read back exactly, and that a
// truncated, oversized or unknown record stops the reader with a reason.
#include <gtest/gtest.h>

#include <vector>

#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/Records.hpp"

using namespace mm::wire;

TEST(Records, BytesSyncFinRoundTrip) {
  std::vector<uint8_t> buf(100);
  RecordWriter w(buf);
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7};
  ASSERT_TRUE(w.put_bytes(data));
  ASSERT_TRUE(w.put_sync());
  ASSERT_TRUE(w.put_fin());
  EXPECT_EQ(w.size(), kBytesRecordOverhead + data.size() + 2);
  RecordReader r({buf.data(), w.size()});
  Record rec;
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::bytes);
  EXPECT_TRUE(std::equal(rec.body.begin(), rec.body.end(), data.begin(), data.end()));
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::sync);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::fin);
  EXPECT_EQ(r.next(rec), RecordError::end);
}

TEST(Records, WriterRefusesWhatDoesNotFit) {
  std::vector<uint8_t> buf(10);
  RecordWriter w(buf);
  EXPECT_FALSE(w.put_bytes(std::vector<uint8_t>(6)));
  EXPECT_EQ(w.size(), 0u);
  EXPECT_TRUE(w.put_bytes(std::vector<uint8_t>(5)));
  EXPECT_FALSE(w.put_fin());
  EXPECT_TRUE(w.put_bytes_header(0).empty());
}

TEST(Records, ReaderRejectsTruncatedAndBadLengths) {
  Record rec;
  {
    const uint8_t m[] = {0x01, 0, 0};  // header cut short
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::truncated);
  }
  {
    const uint8_t m[] = {0x01, 0, 0, 0, 4, 1, 2, 3};  // body cut short
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::truncated);
  }
  {
    const uint8_t m[] = {0x01, 0xFF, 0xFF, 0xFF, 0xFF, 1};  // absurd length
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::truncated);
  }
  {
    const uint8_t m[] = {0x01, 0, 0, 0, 0};  // empty BYTES is never sent
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::bad_length);
  }
}

TEST(Records, ReaderRejectsUnknownTypes) {
  Record rec;
  for (uint8_t code : {0x00, 0x10, 0x7F, 0xFF}) {
    const uint8_t m[] = {code, 0, 0};
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::unknown_type) << int(code);
  }
}

TEST(Records, StoredPageAndStoreTableRoundTrip) {
  std::vector<uint8_t> m(128);
  RecordWriter w(m);
  const std::vector<uint8_t> body = {1, 2, 3, 4, 5};
  ASSERT_TRUE(w.put_page_stored(8192, 0x1122334455667788ull, 0x99aabbccddeeff00ull));
  ASSERT_TRUE(w.put_store_table(body));
  EXPECT_FALSE(w.put_store_table({}));  // a table chunk is never empty
  EXPECT_EQ(w.size(), kPageStoredRecordSize + kStoreTableOverhead + body.size());
  RecordReader r({m.data(), w.size()});
  Record rec;
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_stored);
  EXPECT_TRUE(is_page_record(rec.type));
  EXPECT_EQ(rec.page, 8192u);
  EXPECT_EQ(rec.hash, 0x1122334455667788ull);
  EXPECT_EQ(rec.hash_hi, 0x99aabbccddeeff00ull);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::store_table);
  EXPECT_FALSE(is_page_record(rec.type));
  EXPECT_EQ(std::vector<uint8_t>(rec.body.begin(), rec.body.end()), body);
  EXPECT_EQ(r.next(rec), RecordError::end);
  // Truncated, unaligned.
  EXPECT_EQ(RecordReader({m.data(), kPageStoredRecordSize - 1}).next(rec), RecordError::truncated);
  m[8] = 1;
  EXPECT_EQ(RecordReader({m.data(), kPageStoredRecordSize}).next(rec), RecordError::bad_page);
}

TEST(Records, DeltaPageRoundTripsAndRefusesBadLengths) {
  std::vector<uint8_t> m(64);
  RecordWriter w(m);
  const std::vector<uint8_t> delta = {0, 1, 1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(w.put_page_delta(4096 * 3, 0xabcdef, 77, delta));
  EXPECT_FALSE(w.put_page_delta(0, 1, 1, {}));  // a delta is never empty
  EXPECT_EQ(w.size(), kPageDeltaOverhead + delta.size());
  Record rec;
  RecordReader r({m.data(), w.size()});
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_delta);
  EXPECT_TRUE(is_page_record(rec.type));
  EXPECT_EQ(rec.page, 4096u * 3);
  EXPECT_EQ(rec.hash, 0xabcdefu);
  EXPECT_EQ(rec.slot, 77u);
  EXPECT_EQ(std::vector<uint8_t>(rec.body.begin(), rec.body.end()), delta);
  EXPECT_EQ(r.next(rec), RecordError::end);
  EXPECT_EQ(RecordReader({m.data(), w.size() - 1}).next(rec), RecordError::truncated);
  EXPECT_EQ(RecordReader({m.data(), kPageDeltaOverhead - 1}).next(rec), RecordError::truncated);
  std::vector<uint8_t> big(kMaxDeltaBody + 1);
  EXPECT_FALSE(RecordWriter(m).put_page_delta(0, 1, 1, big));
  m[21] = 0;
  m[22] = 0;  // dlen 0
  EXPECT_EQ(RecordReader({m.data(), w.size()}).next(rec), RecordError::bad_length);
  m[21] = 0x11;  // dlen 4352 > kMaxDeltaBody
  EXPECT_EQ(RecordReader({m.data(), m.size()}).next(rec), RecordError::bad_length);
  m[21] = 0;
  m[22] = 10;
  m[8] = 1;  // unaligned page
  EXPECT_EQ(RecordReader({m.data(), w.size()}).next(rec), RecordError::bad_page);
}

TEST(Records, PageRecordsRoundTrip) {
  std::vector<uint8_t> buf(3 * 4096);
  std::vector<uint8_t> page(4096);
  for (size_t i = 0; i < page.size(); ++i) page[i] = uint8_t(i * 7);
  const std::vector<uint8_t> lz = {9, 8, 7, 6, 5};
  RecordWriter w(buf);
  MultifdBegin b;
  b.flags = 1;
  b.pages_alloc = 128;
  b.packet_num = 0x1122334455667788ull;
  b.dict_slots = 4096;
  b.ramblock = "pc.ram";
  b.channels = 3;
  ASSERT_TRUE(w.put_multifd_begin(b));
  ASSERT_TRUE(w.put_page_zero(0x1000));
  ASSERT_TRUE(w.put_page_same(0x2000, 0x5A5E5A5E01020304ull));
  ASSERT_TRUE(w.put_page_raw(0x3000, 0xAABB, page.data()));
  ASSERT_TRUE(w.put_page_ref(0x4000, 0xCCDD, 77));
  ASSERT_TRUE(w.put_page_compressed(RecordType::page_lz4, 0x5000, 0xEEFF, lz));
  ASSERT_TRUE(w.put_multifd_end({5, 0x0102030405060708ull}));
  EXPECT_FALSE(w.put_page_compressed(RecordType::page_raw, 0, 0, lz));  // not a codec
  EXPECT_FALSE(w.put_page_compressed(RecordType::page_zstd, 0, 0, {}));

  RecordReader r({buf.data(), w.size()});
  Record rec;
  ASSERT_EQ(r.next(rec), RecordError::ok);
  ASSERT_EQ(rec.type, RecordType::multifd_begin);
  EXPECT_EQ(rec.begin.flags, 1u);
  EXPECT_EQ(rec.begin.pages_alloc, 128u);
  EXPECT_EQ(rec.begin.packet_num, 0x1122334455667788ull);
  EXPECT_EQ(rec.begin.dict_slots, 4096u);
  EXPECT_EQ(rec.begin.ramblock, "pc.ram");
  EXPECT_EQ(rec.begin.channels, 3u);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_zero);
  EXPECT_EQ(rec.page, 0x1000u);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_same);
  EXPECT_EQ(rec.page, 0x2000u);
  EXPECT_EQ(rec.hash, 0x5A5E5A5E01020304ull);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_raw);
  EXPECT_EQ(rec.hash, 0xAABBu);
  EXPECT_TRUE(std::equal(rec.body.begin(), rec.body.end(), page.begin(), page.end()));
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_ref);
  EXPECT_EQ(rec.slot, 77u);
  EXPECT_EQ(rec.hash, 0xCCDDu);
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::page_lz4);
  EXPECT_EQ(rec.page, 0x5000u);
  EXPECT_TRUE(std::equal(rec.body.begin(), rec.body.end(), lz.begin(), lz.end()));
  ASSERT_EQ(r.next(rec), RecordError::ok);
  EXPECT_EQ(rec.type, RecordType::multifd_end);
  EXPECT_EQ(rec.end.pages, 5u);
  EXPECT_EQ(rec.end.offsets_digest, 0x0102030405060708ull);
  EXPECT_EQ(r.next(rec), RecordError::end);
}

TEST(Records, PageRecordsRejectTruncationAndBadFields) {
  Record rec;
  std::vector<uint8_t> buf(5000);
  std::vector<uint8_t> page(4096, 1);
  // Every prefix of every page record is truncated, never read past.
  for (int kind = 0; kind < 6; ++kind) {
    RecordWriter w(buf);
    switch (kind) {
      case 0: ASSERT_TRUE(w.put_page_zero(4096)); break;
      case 1: ASSERT_TRUE(w.put_page_raw(4096, 1, page.data())); break;
      case 2: ASSERT_TRUE(w.put_page_ref(4096, 1, 2)); break;
      case 3: ASSERT_TRUE(w.put_page_compressed(RecordType::page_zstd, 4096, 1, {page.data(), 100})); break;
      case 4: ASSERT_TRUE(w.put_multifd_begin({0, 128, 1, 0, "pc.ram"})); break;
      case 5: ASSERT_TRUE(w.put_multifd_end({1, 2})); break;
    }
    for (size_t n = 1; n < w.size(); ++n) {
      EXPECT_EQ(RecordReader({buf.data(), n}).next(rec), RecordError::truncated) << kind << " " << n;
    }
    EXPECT_EQ(RecordReader({buf.data(), w.size()}).next(rec), RecordError::ok) << kind;
  }
  {
    const uint8_t m[] = {0x04, 0, 0, 0, 0, 0, 0, 0x10, 0x01};  // ZERO at 0x1001
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::bad_page);
  }
  {
    uint8_t m[19 + 10] = {0x05};  // LZ4 with clen 0
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::bad_length);
    m[17] = 0xFF;  // clen 65280: beyond any page's compressed size
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::bad_length);
  }
}

namespace {
// Writes the same mix of records through `w`.
void write_mix(RecordWriter& w, const std::vector<uint8_t>& page) {
  MultifdBegin b{1, 128, 42, 16384, "pc.ram"};
  ASSERT_TRUE(w.put_multifd_begin(b));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(w.put_page_zero(uint64_t(i) * 4096));
    ASSERT_TRUE(w.put_page_raw(uint64_t(i + 10) * 4096, 0x1234 + i, page.data()));
    ASSERT_TRUE(w.put_page_ref(uint64_t(i + 20) * 4096, 0x99, uint32_t(i)));
    ASSERT_TRUE(w.put_page_compressed(RecordType::page_lz4, uint64_t(i + 30) * 4096, 7,
                                      std::span<const uint8_t>(page.data(), 100 + 300 * size_t(i))));
    ASSERT_TRUE(w.put_page_same(uint64_t(i + 40) * 4096, 0x77 + uint64_t(i)));
  }
  ASSERT_TRUE(w.put_bytes(std::span<const uint8_t>(page.data(), 777)));
  ASSERT_TRUE(w.put_sync());
  ASSERT_TRUE(w.put_multifd_end({20, 0xABCDEF}));
  ASSERT_TRUE(w.put_fin());
}
}  // namespace

TEST(RecordWriterSegments, WritesTheSameBytesAsOneBufferAcrossAnySplit) {
  std::vector<uint8_t> page(4096);
  for (size_t i = 0; i < page.size(); ++i) page[i] = uint8_t(i * 7 + 3);
  std::vector<uint8_t> flat(64 << 10);
  RecordWriter one(flat);
  write_mix(one, page);
  flat.resize(one.size());
  // Segments of odd sizes, as packet slots of an MTU would be.
  for (size_t seg_size : {1u, 7u, 100u, 1440u, 4113u, 8940u}) {
    std::vector<std::vector<uint8_t>> store;
    std::vector<std::span<uint8_t>> segs;
    for (size_t total = 0; total < flat.size() + seg_size; total += seg_size) store.emplace_back(seg_size, 0xEE);
    for (auto& s : store) segs.emplace_back(s);
    RecordWriter w{std::span<const std::span<uint8_t>>(segs)};
    write_mix(w, page);
    ASSERT_EQ(w.size(), flat.size()) << seg_size;
    std::vector<uint8_t> joined;
    for (auto& s : store) joined.insert(joined.end(), s.begin(), s.end());
    joined.resize(w.size());
    EXPECT_EQ(joined, flat) << "segments of " << seg_size;
    // ... and it reads back as the same records.
    RecordReader r(joined);
    Record rec;
    int n = 0;
    while (r.next(rec) == RecordError::ok) ++n;
    EXPECT_EQ(n, 1 + 5 * 5 + 4);
  }
}

TEST(RecordWriterSegments, RefusesWhatDoesNotFitAndNeverSplitsABytesHeader) {
  std::vector<uint8_t> a(10, 0), b(20, 0);
  std::vector<std::span<uint8_t>> segs{a, b};
  RecordWriter w{std::span<const std::span<uint8_t>>(segs)};
  EXPECT_EQ(w.room(), 30u);
  std::vector<uint8_t> page(4096, 1);
  EXPECT_FALSE(w.put_page_raw(0, 1, page.data()));  // 4113 bytes
  EXPECT_EQ(w.size(), 0u);
  ASSERT_TRUE(w.put_page_zero(4096));  // 9 bytes in a
  // A BYTES header for 4 bytes (9 in all) would straddle a and b: the
  // caller could not fill its data in one piece.
  EXPECT_TRUE(w.put_bytes_header(4).empty());
  EXPECT_EQ(w.size(), 9u);
  ASSERT_TRUE(w.put_page_same(8192, 0x1122334455667788ull));  // straddles: 1 byte in a, 16 in b
  EXPECT_EQ(w.size(), 26u);
  EXPECT_EQ(b[6], 0x20);
  EXPECT_EQ(b[15], 0x88);
  EXPECT_FALSE(w.put_page_same(12288, 1));
  EXPECT_EQ(w.room(), 4u);
}
