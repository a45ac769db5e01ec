// Proves the AES-256-GCM records of dataplane/wire/PacketCipher
// (dataplane/wire/MMP.md "Encryption"): a sealed datagram opens to its
// plaintext with the peer's key and passes decode_packet with no CRC (crc 0,
// flag::sealed); every header field (the additional data), every
// ciphertext and tag bit, the nonce's transmission number and direction
// are covered; a datagram in the clear does not open; the known-answer
// vector pins the format; the replay window refuses what it saw and what
// is too old.
#include <gtest/gtest.h>

#include <vector>

#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"

using namespace mm::wire;

namespace {

CipherKey key(uint8_t seed) {
  CipherKey k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(seed + i);
  return k;
}

struct Sealed {
  std::vector<uint8_t> datagram;  // header, ciphertext, tag
};

Sealed seal(const PacketCipher& c, Header h, const std::vector<uint8_t>& plain) {
  Sealed s;
  s.datagram.resize(kHeaderSize + plain.size() + kTagSize);
  EXPECT_TRUE(c.seal(h, plain, s.datagram.data() + kHeaderSize,
                     std::span<uint8_t, kHeaderSize>(s.datagram.data(), kHeaderSize)));
  return s;
}

// decode_packet then open; the plaintext on success.
bool open_datagram(const PacketCipher& c, const std::vector<uint8_t>& d, std::vector<uint8_t>& out) {
  Header h;
  std::span<const uint8_t> p;
  if (decode_packet(d, h, p) != DecodeError::ok) return false;
  out.assign(p.size() >= kTagSize ? p.size() - kTagSize : 0, 0);
  return c.open(h, p, out.data());
}

// A CRC that decode_packet accepts for a datagram in the clear.
void fix_crc(std::vector<uint8_t>& d) {
  put_be32(d.data() + 28, 0);
  put_be32(d.data() + 28, packet_crc(std::span<const uint8_t, kHeaderSize>(d.data(), kHeaderSize),
                                     {d.data() + kHeaderSize, d.size() - kHeaderSize}));
}

Header data_header() {
  Header h;
  h.type = PacketType::data;
  h.session = 0x01020304;
  h.stream = 3;
  h.flags = flag::first | flag::last;
  h.seq = 77;
  h.msg = 9;
  h.auth = 5;  // transmission number
  return h;
}

}  // namespace

TEST(PacketCipher, SealedDatagramOpensToItsPlaintext) {
  const PacketCipher tx(key(1), Direction::source_to_destination, true);
  const PacketCipher rx(key(1), Direction::source_to_destination, false);
  std::vector<uint8_t> plain(4000);
  for (size_t i = 0; i < plain.size(); ++i) plain[i] = uint8_t(i * 31);
  const Sealed s = seal(tx, data_header(), plain);
  Header h;
  std::span<const uint8_t> p;
  ASSERT_EQ(decode_packet(s.datagram, h, p), DecodeError::ok);
  EXPECT_EQ(h.len, plain.size() + kTagSize);
  EXPECT_EQ(h.auth, 5u);
  EXPECT_EQ(h.flags, flag::first | flag::last | flag::sealed);
  EXPECT_EQ(h.crc, 0u);  // the tag covers the datagram: no CRC pass
  EXPECT_NE(std::vector<uint8_t>(p.begin(), p.begin() + 64), std::vector<uint8_t>(plain.begin(), plain.begin() + 64));
  std::vector<uint8_t> out;
  ASSERT_TRUE(open_datagram(rx, s.datagram, out));
  EXPECT_EQ(out, plain);
  // An empty payload (a bare tag) works too.
  const Sealed e = seal(tx, data_header(), {});
  EXPECT_TRUE(open_datagram(rx, e.datagram, out));
  EXPECT_TRUE(out.empty());
}

TEST(PacketCipher, InPlaceSealingGivesTheSameDatagram) {
  const PacketCipher tx(key(1), Direction::source_to_destination, true);
  std::vector<uint8_t> plain(300, 0xAB);
  const Sealed apart = seal(tx, data_header(), plain);
  std::vector<uint8_t> buf(kHeaderSize + plain.size() + kTagSize);
  std::copy(plain.begin(), plain.end(), buf.begin() + kHeaderSize);
  ASSERT_TRUE(tx.seal(data_header(), {buf.data() + kHeaderSize, plain.size()}, buf.data() + kHeaderSize,
                      std::span<uint8_t, kHeaderSize>(buf.data(), kHeaderSize)));
  EXPECT_EQ(buf, apart.datagram);
}

TEST(PacketCipher, EveryHeaderFieldAndEveryBitIsCovered) {
  const PacketCipher tx(key(1), Direction::source_to_destination, true);
  const PacketCipher rx(key(1), Direction::source_to_destination, false);
  const std::vector<uint8_t> plain(100, 7);
  const Sealed s = seal(tx, data_header(), plain);
  std::vector<uint8_t> out;
  // Header bytes 3..27 (type to auth; magic, version are checked by
  // decode_packet, and a sealed datagram has no CRC: only GCM can notice).
  for (size_t off = 3; off < kAadSize; ++off) {
    if (off >= 10 && off < 12) continue;  // flags: only known bits decode (below)
    if (off >= 20 && off < 24) continue;  // len: decode_packet checks it against the datagram
    std::vector<uint8_t> d = s.datagram;
    d[off] ^= off == 3 ? 0x03 : 0x01;  // type: DATA becomes ACK
    EXPECT_FALSE(open_datagram(rx, d, out)) << "header byte " << off << " changed unnoticed";
  }
  // Flags: another known flag.
  {
    std::vector<uint8_t> d = s.datagram;
    d[11] ^= flag::retransmit;
    EXPECT_FALSE(open_datagram(rx, d, out));
  }
  // The sealed flag cleared and a valid CRC written: a datagram in the
  // clear, which decodes but never opens.
  {
    std::vector<uint8_t> d = s.datagram;
    d[11] ^= flag::sealed;
    fix_crc(d);
    Header h;
    std::span<const uint8_t> p;
    ASSERT_EQ(decode_packet(d, h, p), DecodeError::ok);
    EXPECT_FALSE(open_datagram(rx, d, out));
  }
  // Every bit of ciphertext and tag, one at a time (sampled every 7th).
  for (size_t bit = 0; bit < (plain.size() + kTagSize) * 8; bit += 7) {
    std::vector<uint8_t> d = s.datagram;
    d[kHeaderSize + bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_FALSE(open_datagram(rx, d, out)) << "bit " << bit;
  }
  EXPECT_TRUE(open_datagram(rx, s.datagram, out));
}

TEST(PacketCipher, AnotherKeyDirectionOrTransmissionNumberOpensNothing) {
  const PacketCipher tx(key(1), Direction::source_to_destination, true);
  const std::vector<uint8_t> plain(100, 7);
  const Sealed s = seal(tx, data_header(), plain);
  std::vector<uint8_t> out;
  EXPECT_FALSE(open_datagram(PacketCipher(key(2), Direction::source_to_destination, false), s.datagram, out));
  EXPECT_FALSE(open_datagram(PacketCipher(key(1), Direction::destination_to_source, false), s.datagram, out));
  // The same plaintext sealed as transmission 6 is another ciphertext.
  Header h6 = data_header();
  h6.auth = 6;
  const Sealed s6 = seal(tx, h6, plain);
  EXPECT_NE(std::vector<uint8_t>(s6.datagram.begin() + kHeaderSize, s6.datagram.end()),
            std::vector<uint8_t>(s.datagram.begin() + kHeaderSize, s.datagram.end()));
  // A sealing context does not open, an opening one does not seal.
  EXPECT_FALSE(open_datagram(tx, s.datagram, out));
  std::vector<uint8_t> buf(kHeaderSize + kTagSize + 1);
  EXPECT_FALSE(PacketCipher(key(1), Direction::source_to_destination, false)
                   .seal(data_header(), {buf.data(), 1}, buf.data() + kHeaderSize,
                         std::span<uint8_t, kHeaderSize>(buf.data(), kHeaderSize)));
}

TEST(PacketCipher, NonceLayoutAndKnownAnswer) {
  const auto n = packet_nonce(Direction::destination_to_source, data_header());
  const std::array<uint8_t, kNonceSize> want{1, 1, 0, 3, 0, 0, 0, 77, 0, 0, 0, 5};
  EXPECT_EQ(n, want);
  // Pins the format: AES-256-GCM, key 0x00..0x1f, that nonce, the 28 header
  // bytes (version 6, flags FIRST|LAST|SEALED) as additional data,
  // plaintext "MMP3". Computed with Python's cryptography package (AESGCM)
  // from MMP.md's description; both engines must give it.
  CipherKey k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(i);
  for (CipherEngine e : {CipherEngine::openssl, CipherEngine::ipsec_mb}) {
    const PacketCipher tx(k, Direction::destination_to_source, true, e);
    ASSERT_EQ(tx.engine(), e);
    const std::vector<uint8_t> plain{'M', 'M', 'P', '3'};
    const Sealed s = seal(tx, data_header(), plain);
    std::string hex;
    for (size_t i = kHeaderSize; i < s.datagram.size(); ++i) {
      static const char* d = "0123456789abcdef";
      hex += d[s.datagram[i] >> 4];
      hex += d[s.datagram[i] & 15];
    }
    EXPECT_EQ(hex, "df30aac79b322ed15f59c02b69eb6142952ba9c3") << to_string(e);
  }
}

TEST(PacketCipher, BothEnginesMakeTheSameRecordsAndOpenEachOthers) {
  // The build machine's CPU has AES-NI (CI's too): automatic takes ipsec-mb.
  EXPECT_EQ(PacketCipher(key(1), Direction::source_to_destination, true).engine(), CipherEngine::ipsec_mb);
  const CipherEngine engines[] = {CipherEngine::openssl, CipherEngine::ipsec_mb};
  for (size_t len : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(4096), size_t(8940)}) {
    std::vector<uint8_t> plain(len);
    for (size_t i = 0; i < len; ++i) plain[i] = uint8_t(i * 13 + len);
    for (CipherEngine a : engines) {
      const Sealed s = seal(PacketCipher(key(3), Direction::source_to_destination, true, a), data_header(), plain);
      EXPECT_EQ(s.datagram, seal(PacketCipher(key(3), Direction::source_to_destination, true, engines[0]),
                                 data_header(), plain).datagram) << to_string(a) << " " << len;
      for (CipherEngine b : engines) {
        const PacketCipher rx(key(3), Direction::source_to_destination, false, b);
        std::vector<uint8_t> out;
        ASSERT_TRUE(open_datagram(rx, s.datagram, out)) << to_string(a) << " -> " << to_string(b) << " " << len;
        EXPECT_EQ(out, plain);
        std::vector<uint8_t> d = s.datagram;
        d.back() ^= 1;  // the tag's last bit
        EXPECT_FALSE(open_datagram(rx, d, out)) << to_string(a) << " -> " << to_string(b) << " " << len;
        if (len) {
          d = s.datagram;
          d[kHeaderSize] ^= 0x80;  // the ciphertext's first bit
          EXPECT_FALSE(open_datagram(rx, d, out));
        }
      }
    }
  }
  CipherEngine e;
  EXPECT_TRUE(parse_cipher_engine("ipsec-mb", e) && e == CipherEngine::ipsec_mb);
  EXPECT_TRUE(parse_cipher_engine("openssl", e) && e == CipherEngine::openssl);
  EXPECT_TRUE(parse_cipher_engine("auto", e) && e == CipherEngine::automatic);
  EXPECT_FALSE(parse_cipher_engine("aesni", e));
}

TEST(ReplayWindow, RefusesWhatItSawAndWhatIsTooOld) {
  ReplayWindow w;
  EXPECT_TRUE(w.fresh(0));
  w.mark(0);
  EXPECT_FALSE(w.fresh(0));
  EXPECT_TRUE(w.fresh(5));
  w.mark(5);
  // Late but inside the window: fresh once.
  EXPECT_TRUE(w.fresh(3));
  w.mark(3);
  EXPECT_FALSE(w.fresh(3));
  EXPECT_TRUE(w.fresh(4));
  // A jump: the window slides; numbers more than a span behind are refused.
  w.mark(5 + ReplayWindow::kSpan);
  EXPECT_FALSE(w.fresh(4));
  EXPECT_FALSE(w.fresh(5));
  EXPECT_TRUE(w.fresh(6));  // within the span, never seen (its old bit was cleared)
  EXPECT_FALSE(w.fresh(5 + ReplayWindow::kSpan));
  // Sliding one by one clears the bit of the number a span older.
  for (uint32_t n = 6 + ReplayWindow::kSpan; n < 6 + 3 * ReplayWindow::kSpan; ++n) {
    ASSERT_TRUE(w.fresh(n));
    w.mark(n);
    ASSERT_FALSE(w.fresh(n));
  }
  EXPECT_FALSE(w.fresh(6 + 2 * ReplayWindow::kSpan - 1));
  EXPECT_TRUE(w.fresh(6 + 3 * ReplayWindow::kSpan + 100));
}
