// Proves the MMP header codec matches dataplane/wire/MMP.md and rejects every kind of
// malformed datagram with its own reason.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "dataplane/wire/AuthTag.hpp"
#include "dataplane/wire/Mmp.hpp"

using namespace mm::wire;

namespace {

std::vector<uint8_t> make_packet(const Header& h, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> d(kHeaderSize + payload.size());
  seal_header(h, payload, std::span<uint8_t, kHeaderSize>(d.data(), kHeaderSize));
  std::copy(payload.begin(), payload.end(), d.begin() + kHeaderSize);
  return d;
}

Header sample_header() {
  Header h;
  h.type = PacketType::data;
  h.session = 0xA1B2C3D4;
  h.stream = 7;
  h.flags = flag::first | flag::last;
  h.seq = 0xFFFFFFF0;
  h.msg = 42;
  return h;
}

DecodeError decode(const std::vector<uint8_t>& d) {
  Header h;
  std::span<const uint8_t> p;
  return decode_packet(d, h, p);
}

}  // namespace

TEST(MmpHeader, LayoutIsBigEndianAsSpecified) {
  const auto d = make_packet(sample_header(), {1, 2, 3});
  ASSERT_EQ(d.size(), kHeaderSize + 3);
  EXPECT_EQ(d[0], 0x4D);
  EXPECT_EQ(d[1], 0x4D);
  EXPECT_EQ(d[2], 6);  // MMP version 6
  EXPECT_EQ(d[3], 1);
  EXPECT_EQ(get_be32(&d[4]), 0xA1B2C3D4u);
  EXPECT_EQ(get_be16(&d[8]), 7);
  EXPECT_EQ(get_be16(&d[10]), flag::first | flag::last);
  EXPECT_EQ(get_be32(&d[12]), 0xFFFFFFF0u);
  EXPECT_EQ(get_be32(&d[16]), 42u);
  EXPECT_EQ(get_be32(&d[20]), 3u);
  EXPECT_EQ(get_be32(&d[24]), 0u);
}

TEST(MmpHeader, CrcIsCrc32cOfHeaderWithZeroCrcAndPayload) {
  // CRC32C("123456789") = 0xE3069283 (the Castagnoli check value): a header
  // of zeros followed by that payload must match a reference computed here.
  std::array<uint8_t, kHeaderSize> zero{};
  const uint8_t check[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  // Reference: bitwise CRC32C.
  auto crc32c = [](const std::vector<uint8_t>& v) {
    uint32_t c = 0xFFFFFFFF;
    for (uint8_t b : v) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
  };
  EXPECT_EQ(crc32c({check, check + 9}), 0xE3069283u);
  std::vector<uint8_t> all(zero.begin(), zero.end());
  all.insert(all.end(), check, check + 9);
  EXPECT_EQ(packet_crc(zero, check), crc32c(all));
}

TEST(MmpHeader, RoundTrips) {
  std::vector<uint8_t> payload(1000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 7);
  const auto d = make_packet(sample_header(), payload);
  Header h;
  std::span<const uint8_t> p;
  ASSERT_EQ(decode_packet(d, h, p), DecodeError::ok);
  EXPECT_EQ(h.session, 0xA1B2C3D4u);
  EXPECT_EQ(h.stream, 7);
  EXPECT_EQ(h.seq, 0xFFFFFFF0u);
  EXPECT_EQ(h.msg, 42u);
  EXPECT_EQ(h.len, 1000u);
  EXPECT_TRUE(std::equal(p.begin(), p.end(), payload.begin(), payload.end()));
}

TEST(MmpHeader, RejectsEachMalformation) {
  const auto good = make_packet(sample_header(), {9, 9, 9, 9});
  EXPECT_EQ(decode(std::vector<uint8_t>(good.begin(), good.begin() + 31)), DecodeError::too_short);
  EXPECT_EQ(decode({}), DecodeError::too_short);
  auto bad = good;
  bad[0] = 0x4E;
  EXPECT_EQ(decode(bad), DecodeError::bad_magic);
  bad = good;
  bad[2] = 1;  // version 1 (64 SACK bits only) is refused
  EXPECT_EQ(decode(bad), DecodeError::bad_version);
  bad[2] = 2;  // version 2 (no encrypted sessions) too
  EXPECT_EQ(decode(bad), DecodeError::bad_version);
  bad[2] = 3;  // version 3 (a CRC over sealed datagrams too)
  EXPECT_EQ(decode(bad), DecodeError::bad_version);
  for (uint8_t t : {0, 5, 255}) {
    bad = good;
    bad[3] = t;
    EXPECT_EQ(decode(bad), DecodeError::bad_type) << int(t);
  }
  bad = good;
  bad[10] = 0x80;  // an undefined flag bit
  EXPECT_EQ(decode(bad), DecodeError::bad_flags);
  bad = good;
  bad.push_back(0);  // trailing byte not covered by len
  EXPECT_EQ(decode(bad), DecodeError::bad_length);
  bad = good;
  bad.pop_back();
  EXPECT_EQ(decode(bad), DecodeError::bad_length);
  bad = good;
  put_be32(&bad[20], 0xFFFFFFFF);
  EXPECT_EQ(decode(bad), DecodeError::bad_length);
  bad = good;
  bad[kHeaderSize + 2] ^= 1;  // payload bit flip
  EXPECT_EQ(decode(bad), DecodeError::bad_crc);
  bad = good;
  bad[13] ^= 0x10;  // seq bit flip
  EXPECT_EQ(decode(bad), DecodeError::bad_crc);
}

TEST(MmpHeader, SealedDatagramsCarryNoCrcAndRoomForTheirTag) {
  // MMP.md "Encryption": flag::sealed, crc 0, at least the 16-byte tag;
  // the tag itself is PacketCipher's to check (wire_cipher_test).
  Header h = sample_header();
  h.flags |= flag::sealed;
  h.len = uint32_t(kTagSize + 5);
  std::vector<uint8_t> d(kHeaderSize + h.len, 0xC3);
  encode_header(h, std::span<uint8_t, kHeaderSize>(d.data(), kHeaderSize));
  Header got;
  std::span<const uint8_t> p;
  ASSERT_EQ(decode_packet(d, got, p), DecodeError::ok);
  EXPECT_EQ(got.flags, h.flags);
  EXPECT_EQ(p.size(), kTagSize + 5);
  auto bad = d;
  put_be32(&bad[28], packet_crc(std::span<const uint8_t, kHeaderSize>(d.data(), kHeaderSize),
                                {d.data() + kHeaderSize, d.size() - kHeaderSize}));
  EXPECT_EQ(decode(bad), DecodeError::bad_crc);  // a sealed datagram's crc is 0
  h.len = uint32_t(kTagSize - 1);
  bad.assign(kHeaderSize + h.len, 0xC3);
  encode_header(h, std::span<uint8_t, kHeaderSize>(bad.data(), kHeaderSize));
  EXPECT_EQ(decode(bad), DecodeError::bad_length);  // no room for a tag
  // The same bytes without the flag need their CRC.
  bad = d;
  bad[11] &= uint8_t(~flag::sealed);
  EXPECT_EQ(decode(bad), DecodeError::bad_crc);
}

TEST(MmpHeader, RandomGarbageNeverDecodesAndNeverCrashes) {
  std::mt19937 rng(1234);
  const auto good = make_packet(sample_header(), std::vector<uint8_t>(200, 0x5A));
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> d;
    if (i % 2 == 0) {
      d.resize(rng() % 300);
      for (auto& b : d) b = uint8_t(rng());
    } else {
      d = good;  // a valid packet with 1-3 random byte changes
      for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) d[rng() % d.size()] ^= uint8_t(1 + rng() % 255);
    }
    accepted += decode(d) == DecodeError::ok;
  }
  EXPECT_EQ(accepted, 0);
}

TEST(MmpAck, RoundTripsAndChecksSize) {
  AckPayload a{0x01020304, 0x8000000000000001ull, 512, 0x1122334455667788ull};
  std::array<uint8_t, kAckSize> buf;
  ASSERT_EQ(encode_ack(a, buf), kAckSize);
  AckPayload b;
  ASSERT_TRUE(decode_ack(buf, b));
  EXPECT_EQ(b.cum_seq, a.cum_seq);
  EXPECT_EQ(b.sack, a.sack);
  EXPECT_EQ(b.credits, a.credits);
  EXPECT_EQ(b.echo_ts, a.echo_ts);
  EXPECT_FALSE(decode_ack(std::span<const uint8_t>(buf.data(), kAckSize - 1), b));
  EXPECT_EQ(b.more_words, 0);
}

TEST(MmpAck, ExtraSackWordsCoverAWholeWindow) {
  AckPayload a{7, 1, 100, 0};
  a.more_words = 15;
  for (size_t k = 0; k < a.more.size(); ++k) a.more[k] = 0x0101010101010101ull * (k + 1);
  std::array<uint8_t, kAckMaxSize + 8> buf{};
  ASSERT_EQ(encode_ack(a, buf), kAckMaxSize);
  AckPayload b;
  ASSERT_TRUE(decode_ack(std::span<const uint8_t>(buf.data(), kAckMaxSize), b));
  EXPECT_EQ(b.sack_words(), 16u);
  EXPECT_EQ(b.more, a.more);
  EXPECT_TRUE(b.sacked(0));
  EXPECT_FALSE(b.sacked(1));
  EXPECT_TRUE(b.sacked(64));        // more[0] bit 0
  EXPECT_TRUE(b.sacked(64 * 15 + 3));  // more[14] = 0x0f0f..: bit 3 set
  EXPECT_FALSE(b.sacked(64 * 15 + 4));
  // Not a whole number of words, or more words than a window needs.
  EXPECT_FALSE(decode_ack(std::span<const uint8_t>(buf.data(), kAckSize + 4), b));
  EXPECT_FALSE(decode_ack(std::span<const uint8_t>(buf.data(), kAckMaxSize + 8), b));
  // An output too small for the ACK is refused, not overrun.
  std::array<uint8_t, kAckSize + 8> small{};
  EXPECT_EQ(encode_ack(a, small), 0u);
}

TEST(MmpAuth, TagBindsHeaderPayloadAndKey) {
  AuthSecret k1{}, k2{};
  for (size_t i = 0; i < k1.size(); ++i) {
    k1[i] = uint8_t(i * 7 + 1);
    k2[i] = uint8_t(i * 7 + 2);
  }
  const std::vector<uint8_t> payload(500, 0x42);
  std::vector<uint8_t> d(kHeaderSize + payload.size());
  seal_header(sample_header(), payload, std::span<uint8_t, kHeaderSize>(d.data(), kHeaderSize), &k1);
  std::copy(payload.begin(), payload.end(), d.begin() + kHeaderSize);
  Header h;
  std::span<const uint8_t> p;
  ASSERT_EQ(decode_packet(d, h, p), DecodeError::ok);
  EXPECT_NE(h.auth, 0u);
  EXPECT_TRUE(auth_ok(k1, h, p));
  EXPECT_FALSE(auth_ok(k2, h, p));  // another session's key
  Header other = h;
  other.seq ^= 1;  // a replayed packet with a rewritten sequence number
  EXPECT_FALSE(auth_ok(k1, other, p));
  std::vector<uint8_t> changed(p.begin(), p.end());
  changed[10] ^= 1;
  EXPECT_FALSE(auth_ok(k1, h, changed));
}
