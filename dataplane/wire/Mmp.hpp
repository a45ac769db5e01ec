// MMP packet header: layout, encode, decode and validation (MMP.md, "Header").
// Pure code without DPDK so it is unit-tested and fuzzed in isolation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace mm::wire {

// MMP.md "Header": magic "MM", 32 bytes, big-endian fields.
inline constexpr uint16_t kMagic = 0x4D4D;
// 2: ACKs carry up to 1024 SACK bits; 3: AES-256-GCM sessions; 4: sealed
// datagrams carry flag::sealed and no CRC (the GCM tag covers them);
// 5: PAGE_DELTA; 6: PAGE_SAME carries the page's hash and MULTIFD_BEGIN the
// channels the unchanged filter orders (the destination checks SAME pages).
inline constexpr uint8_t kVersion = 6;
inline constexpr size_t kHeaderSize = 32;
// MMP.md "Encapsulation": IPv4 (20) + UDP (8) sit between the MTU and MMP.
inline constexpr size_t kIpUdpOverhead = 28;
// Largest MMP payload we accept at all (MTU 9600 minus IP/UDP/MMP headers).
inline constexpr size_t kMaxPayload = 9600 - kIpUdpOverhead - kHeaderSize;
// The GCM tag after a sealed datagram's ciphertext (PacketCipher.hpp).
inline constexpr size_t kTagSize = 16;

// MMP.md "Sessions and streams": stream 17 carries QEMU's postcopy-preempt
// channel (the pages the destination asked for), ahead of every bulk stream.
inline constexpr uint16_t kPreemptStream = 17;

// MMP.md "Encapsulation": the queue (worker) of a host with `queues` of
// them that owns stream `stream` of session `session`. Stream 0 (the main
// channel, PROBE, CLOSE) and the preempt stream (its page requests come on
// stream 0's return path) belong to the session's home queue,
// session % queues; the others follow round the queues from there, so one
// session's streams spread over every worker.
inline constexpr uint16_t stream_queue(uint32_t session, uint16_t stream, uint16_t queues) {
  return queues <= 1 ? 0 : uint16_t((uint64_t(session) + (stream == kPreemptStream ? 0 : stream)) % queues);
}

enum class PacketType : uint8_t { data = 1, ack = 2, probe = 3, close = 4 };

// MMP.md header flags.
namespace flag {
inline constexpr uint16_t first = 1u << 0;
inline constexpr uint16_t last = 1u << 1;
inline constexpr uint16_t retransmit = 1u << 2;
inline constexpr uint16_t ack_requested = 1u << 3;
// On an ACK: since the stream's previous ACK a data packet arrived that was
// already there (a retransmission that was not needed; MMP.md "ACK").
inline constexpr uint16_t duplicate = 1u << 4;
// The payload is AES-256-GCM ciphertext and tag (MMP.md "Encryption"): the
// tag authenticates the datagram, so its crc field is 0 and not computed.
inline constexpr uint16_t sealed = 1u << 5;
inline constexpr uint16_t known = first | last | retransmit | ack_requested | duplicate | sealed;
}  // namespace flag

struct Header {
  PacketType type = PacketType::data;
  uint32_t session = 0;
  uint16_t stream = 0;
  uint16_t flags = 0;
  uint32_t seq = 0;
  uint32_t msg = 0;
  uint32_t len = 0;   // payload bytes
  uint32_t auth = 0;  // 0 when the session has no key
  uint32_t crc = 0;
};

// Why a datagram was rejected. Each value has its own receive counter.
enum class DecodeError : uint8_t {
  ok = 0,
  too_short,
  bad_magic,
  bad_version,
  bad_type,
  bad_flags,
  bad_length,
  bad_crc,
  count_  // number of values, for counter arrays
};
std::string_view to_string(DecodeError e);

// CRC32C (Castagnoli) of the header (crc field as zero) followed by payload.
uint32_t packet_crc(std::span<const uint8_t, kHeaderSize> header, std::span<const uint8_t> payload);

// Writes `h` into out (crc field written as given).
void encode_header(const Header& h, std::span<uint8_t, kHeaderSize> out);

// Writes `h` with len = payload.size(), the auth tag when the session has a
// key (see AuthTag.hpp; h.auth as given otherwise) and the CRC over header
// and payload; returns the CRC.
uint32_t seal_header(Header h, std::span<const uint8_t> payload, std::span<uint8_t, kHeaderSize> out,
                     const std::array<uint8_t, 192>* auth_secret = nullptr);

// Parses and validates a datagram: magic, version, type, flags, length (the
// header's len must equal the bytes that follow it) and CRC; a sealed
// datagram instead needs crc 0 and room for its tag (its tag is checked by
// PacketCipher::open, which the session must call). On ok, `payload` views
// the payload inside `datagram`.
DecodeError decode_packet(std::span<const uint8_t> datagram, Header& h,
                          std::span<const uint8_t>& payload);

// ACK payload (MMP.md "Packet types"): 24 bytes, then up to 15 more
// 8-byte SACK words, so that the sender sees every hole of a whole window
// (RACK finds losses only among packets an ACK reports on).
inline constexpr size_t kSackWords = 16;  // 1024 packets past cum_seq
struct AckPayload {
  uint32_t cum_seq = 0;  // every seq below it was received
  uint64_t sack = 0;     // bit i: cum_seq + 1 + i received
  uint32_t credits = 0;  // packets the receiver can still buffer for this stream
  uint64_t echo_ts = 0;  // timestamp of the newest PROBE seen, echoed for RTT
  bool duplicate = false;  // carried as the ACK header's flag::duplicate, not in the payload
  // Words 1.. of the SACK bitmap: bit i of more[k] is cum_seq + 1 + 64 (k + 1) + i.
  uint8_t more_words = 0;
  std::array<uint64_t, kSackWords - 1> more{};
  uint32_t sack_words() const { return 1u + more_words; }
  bool sacked(uint32_t i) const {  // packet cum_seq + 1 + i
    const uint64_t w = i < 64 ? sack : more[i / 64 - 1];
    return (w >> (i % 64)) & 1;
  }
};
inline constexpr size_t kAckSize = 24;  // with one SACK word
inline constexpr size_t kAckMaxSize = kAckSize + 8 * (kSackWords - 1);
// Writes the ACK into out (at least kAckMaxSize bytes); returns its size.
size_t encode_ack(const AckPayload& a, std::span<uint8_t> out);
bool decode_ack(std::span<const uint8_t> payload, AckPayload& a);

// PROBE payload (MMP.md "Packet types"): the sender's timestamp, 8 bytes.
inline constexpr size_t kProbeSize = 8;

// CLOSE payload (MMP.md "Packet types"): reason code (2) + UTF-8 text.
enum class CloseReason : uint16_t { cancelled = 1, failed = 2, completed = 3 };
inline constexpr size_t kMaxCloseText = 200;

// Big-endian helpers shared by the wire codecs.
inline void put_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void put_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}
inline void put_be64(uint8_t* p, uint64_t v) {
  put_be32(p, uint32_t(v >> 32));
  put_be32(p + 4, uint32_t(v));
}
inline uint16_t get_be16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
inline uint32_t get_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline uint64_t get_be64(const uint8_t* p) {
  return (uint64_t(get_be32(p)) << 32) | get_be32(p + 4);
}

}  // namespace mm::wire
