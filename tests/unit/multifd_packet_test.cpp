// Proves the QEMU 7.2 multifd structures are parsed as QEMU writes them and
// that anything malformed is rejected with its own reason, never a crash.
// (tests/e2e/test_multifd_capture.py checks the same parser on channels
// captured from a real QEMU.)
#include <gtest/gtest.h>

#include <random>

#include "dataplane/qemu/ChannelClassifier.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"

using namespace mm::qemu;

namespace {
MultifdPacketHeader sample() {
  MultifdPacketHeader h;
  h.flags = 0;
  h.pages_alloc = 128;
  h.normal_pages = 3;
  h.next_packet_size = 3 * 4096;
  h.packet_num = 77;
  h.ramblock = "pc.ram";
  h.offsets = {0x1000, 0x7000, 0x10000000};
  return h;
}
}  // namespace

TEST(MultifdInit, RoundTripsAndClassifiesAsMultifd) {
  MultifdInit in;
  in.id = 3;
  for (size_t i = 0; i < 16; ++i) in.uuid[i] = uint8_t(i + 1);
  std::array<uint8_t, kMultifdInitSize> buf;
  encode_multifd_init(in, buf);
  MultifdInit out;
  ASSERT_EQ(parse_multifd_init(buf, out), MultifdError::ok);
  EXPECT_EQ(out.id, 3);
  EXPECT_EQ(out.uuid, in.uuid);
  const auto kind = classify_channel(buf);
  EXPECT_EQ(kind.type, ChannelKind::multifd);
  EXPECT_EQ(kind.multifd_id, 3);
  EXPECT_EQ(parse_multifd_init(std::span<const uint8_t>(buf).first(63), out), MultifdError::need_more);
  buf[0] = 0;
  EXPECT_EQ(parse_multifd_init(buf, out), MultifdError::bad_magic);
}

TEST(MultifdHeader, LayoutIsQemu72s) {
  const auto b = encode_multifd_header(sample());
  ASSERT_EQ(b.size(), 1344u);  // 320 + 8 * 128, as dataplane/qemu/QEMU-7.2-STREAM.md §2 says
  EXPECT_EQ(b[0], 0x11);
  EXPECT_EQ(b[3], 0x44);
  EXPECT_EQ(b[7], 1);     // version
  EXPECT_EQ(b[15], 128);  // pages_alloc
  EXPECT_EQ(b[19], 3);    // normal pages
  EXPECT_EQ(b[31], 77);   // packet_num
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[64])), "pc.ram");
  EXPECT_EQ(b[320 + 6], 0x10);  // offset[0] = 0x1000, big-endian
  MultifdPacketHeader h;
  ASSERT_EQ(parse_multifd_header(b, h), MultifdError::ok);
  EXPECT_EQ(h.ramblock, "pc.ram");
  EXPECT_EQ(h.offsets, sample().offsets);
  EXPECT_EQ(h.packet_num, 77u);
  size_t size = 0;
  ASSERT_EQ(multifd_header_size(b, size), MultifdError::ok);
  EXPECT_EQ(size, 1344u);
}

TEST(MultifdHeader, RejectsEachMalformation) {
  auto check = [](MultifdPacketHeader h, MultifdError want) {
    auto b = encode_multifd_header(h);
    MultifdPacketHeader out;
    EXPECT_EQ(parse_multifd_header(b, out), want) << to_string(want);
  };
  auto h = sample();
  h.normal_pages = 129;
  h.next_packet_size = 129 * 4096;
  check(h, MultifdError::bad_page_count);
  h = sample();
  h.offsets[1] = 0x7001;
  check(h, MultifdError::bad_offset);
  h = sample();
  h.next_packet_size = 4096;
  check(h, MultifdError::bad_payload_size);
  h = sample();
  h.ramblock = "";
  check(h, MultifdError::bad_ramblock);
  h = sample();
  h.flags = multifd_flag::sync;  // a SYNC packet with pages is fine in 7.2
  check(h, MultifdError::ok);
  // A SYNC packet without pages keeps the previous packet's size and has
  // no payload, as QEMU 7.2 really sends it.
  h = sample();
  h.flags = multifd_flag::sync;
  h.normal_pages = 0;
  h.offsets.clear();
  h.next_packet_size = 128 * 4096;
  check(h, MultifdError::ok);
  EXPECT_EQ(h.payload_size(), 0u);

  auto b = encode_multifd_header(sample());
  MultifdPacketHeader out;
  EXPECT_EQ(parse_multifd_header(std::span<const uint8_t>(b).first(1000), out), MultifdError::need_more);
  auto bad = b;
  bad[4 + 3] = 2;
  EXPECT_EQ(parse_multifd_header(bad, out), MultifdError::bad_version);
  bad = b;
  bad[12] = 0xFF;  // pages_alloc huge
  EXPECT_EQ(parse_multifd_header(bad, out), MultifdError::bad_pages_alloc);
  bad = b;
  std::fill(bad.begin() + 64, bad.begin() + 320, 'x');  // name without NUL
  EXPECT_EQ(parse_multifd_header(bad, out), MultifdError::bad_ramblock);
}

TEST(MultifdHeader, MutatedHeadersParseConsistentlyOrFail) {
  std::mt19937 rng(3);
  const auto good = encode_multifd_header(sample());
  for (int i = 0; i < 20000; ++i) {
    auto b = good;
    for (int k = 0, n = 1 + int(rng() % 4); k < n; ++k) b[rng() % b.size()] = uint8_t(rng());
    if (i % 3 == 0) b.resize(rng() % b.size());
    MultifdPacketHeader out;
    const MultifdError e = parse_multifd_header(b, out);
    if (e == MultifdError::ok) {
      EXPECT_GE(b.size(), out.header_size());  // never reads past what it was given
      // Whatever passes is self-consistent: the rebuilt packet is sound.
      EXPECT_LE(out.normal_pages, out.pages_alloc);
      EXPECT_EQ(out.offsets.size(), size_t(out.normal_pages));
      for (uint64_t o : out.offsets) EXPECT_EQ(o % 4096, 0u);
      if (!out.compressed()) {
        EXPECT_EQ(uint64_t(out.payload_size()), uint64_t(out.normal_pages) * 4096);
      }
    }
  }
}
