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

TEST(Records, ReaderRejectsUnknownAndUnnegotiatedTypes) {
  Record rec;
  for (uint8_t code : {0x00, 0x0D, 0x7F, 0xFF}) {
    const uint8_t m[] = {code, 0, 0};
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::unknown_type) << int(code);
  }
  for (uint8_t code = 0x02; code <= 0x0A; ++code) {
    const uint8_t m[] = {code, 0, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(RecordReader(m).next(rec), RecordError::unsupported) << int(code);
  }
}
