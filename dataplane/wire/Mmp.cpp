#include "dataplane/wire/Mmp.hpp"

#include <algorithm>

#include "dataplane/wire/AuthTag.hpp"

#include <isa-l/crc.h>

#include <array>

namespace mm::wire {

std::string_view to_string(DecodeError e) {
  switch (e) {
    case DecodeError::ok: return "ok";
    case DecodeError::too_short: return "too_short";
    case DecodeError::bad_magic: return "bad_magic";
    case DecodeError::bad_version: return "bad_version";
    case DecodeError::bad_type: return "bad_type";
    case DecodeError::bad_flags: return "bad_flags";
    case DecodeError::bad_length: return "bad_length";
    case DecodeError::bad_crc: return "bad_crc";
    case DecodeError::count_: break;
  }
  return "unknown";
}

uint32_t packet_crc(std::span<const uint8_t, kHeaderSize> header,
                    std::span<const uint8_t> payload) {
  // isa-l's crc32_iscsi is CRC32C without the final inversion; chaining the
  // raw state over header-with-zero-crc and payload equals one pass.
  std::array<uint8_t, kHeaderSize> h;
  std::copy(header.begin(), header.end(), h.begin());
  put_be32(h.data() + 28, 0);
  uint32_t state = crc32_iscsi(h.data(), int(h.size()), 0xFFFFFFFFu);
  if (!payload.empty()) {
    state = crc32_iscsi(const_cast<uint8_t*>(payload.data()), int(payload.size()), state);
  }
  return ~state;
}

void encode_header(const Header& h, std::span<uint8_t, kHeaderSize> out) {
  uint8_t* p = out.data();
  put_be16(p + 0, kMagic);
  p[2] = kVersion;
  p[3] = uint8_t(h.type);
  put_be32(p + 4, h.session);
  put_be16(p + 8, h.stream);
  put_be16(p + 10, h.flags);
  put_be32(p + 12, h.seq);
  put_be32(p + 16, h.msg);
  put_be32(p + 20, h.len);
  put_be32(p + 24, h.auth);
  put_be32(p + 28, h.crc);
}

uint32_t seal_header(Header h, std::span<const uint8_t> payload,
                     std::span<uint8_t, kHeaderSize> out, const AuthSecret* auth_secret) {
  h.len = uint32_t(payload.size());
  h.crc = 0;
  if (auth_secret) h.auth = auth_tag(*auth_secret, h, payload);
  encode_header(h, out);
  const uint32_t crc = packet_crc(out, payload);
  put_be32(out.data() + 28, crc);
  return crc;
}

DecodeError decode_packet(std::span<const uint8_t> datagram, Header& h,
                          std::span<const uint8_t>& payload) {
  if (datagram.size() < kHeaderSize) return DecodeError::too_short;
  const uint8_t* p = datagram.data();
  if (get_be16(p) != kMagic) return DecodeError::bad_magic;
  if (p[2] != kVersion) return DecodeError::bad_version;
  if (p[3] < uint8_t(PacketType::data) || p[3] > uint8_t(PacketType::close)) {
    return DecodeError::bad_type;
  }
  h.type = PacketType(p[3]);
  h.session = get_be32(p + 4);
  h.stream = get_be16(p + 8);
  h.flags = get_be16(p + 10);
  h.seq = get_be32(p + 12);
  h.msg = get_be32(p + 16);
  h.len = get_be32(p + 20);
  h.auth = get_be32(p + 24);
  h.crc = get_be32(p + 28);
  if ((h.flags & ~flag::known) != 0) return DecodeError::bad_flags;
  // The length must describe exactly the bytes that follow: a frame padded
  // or cut on the way is not trusted.
  if (h.len > kMaxPayload || h.len != datagram.size() - kHeaderSize) {
    return DecodeError::bad_length;
  }
  payload = datagram.subspan(kHeaderSize, h.len);
  if (h.flags & flag::sealed) {
    // MMP.md "Encryption": the GCM tag, checked before anything of the
    // packet is used, covers header and payload; a CRC would be a second
    // pass over the same bytes.
    if (h.crc != 0) return DecodeError::bad_crc;
    if (h.len < kTagSize) return DecodeError::bad_length;
    return DecodeError::ok;
  }
  if (packet_crc(datagram.first<kHeaderSize>(), payload) != h.crc) return DecodeError::bad_crc;
  return DecodeError::ok;
}

size_t encode_ack(const AckPayload& a, std::span<uint8_t> out) {
  const size_t n = kAckSize + 8 * size_t(std::min<uint32_t>(a.more_words, kSackWords - 1));
  if (out.size() < n) return 0;
  uint8_t* p = out.data();
  put_be32(p, a.cum_seq);
  put_be64(p + 4, a.sack);
  put_be32(p + 12, a.credits);
  put_be64(p + 16, a.echo_ts);
  for (size_t k = 0; kAckSize + 8 * k < n; ++k) put_be64(p + kAckSize + 8 * k, a.more[k]);
  return n;
}

bool decode_ack(std::span<const uint8_t> payload, AckPayload& a) {
  if (payload.size() < kAckSize || payload.size() > kAckMaxSize || (payload.size() - kAckSize) % 8 != 0) {
    return false;
  }
  const uint8_t* p = payload.data();
  a.cum_seq = get_be32(p);
  a.sack = get_be64(p + 4);
  a.credits = get_be32(p + 12);
  a.echo_ts = get_be64(p + 16);
  a.more_words = uint8_t((payload.size() - kAckSize) / 8);
  for (size_t k = 0; k < a.more_words; ++k) a.more[k] = get_be64(p + kAckSize + 8 * k);
  return true;
}

}  // namespace mm::wire
