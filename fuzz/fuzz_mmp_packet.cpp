// MMP datagrams (dataplane/wire/MMP.md "Header", "Packet types") as a
// receiving daemon meets them: decode_packet() on each, decode_ack() on
// ACK payloads, and every valid packet of the session handed to a real
// transport Connection with data in flight (its SACK scoreboard, RACK,
// PROBE echo and CLOSE parsing). Input: pieces (FuzzCheck.hpp), each a
// mode byte then the datagram; mode bit 0 fixes the length field and bit 1
// the CRC (0 on a sealed datagram) so the fuzzer gets past them, bit 2
// sets the session to ours.
// Properties: a decoded header re-encodes to the same 32 bytes; a decoded
// ACK re-encodes to its payload.
#include <array>
#include <cstring>
#include <vector>

#include "dataplane/transport/Connection.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm;

namespace {

constexpr uint32_t kSession = 7;

class DiscardPort final : public transport::DatagramPort {
 public:
  uint16_t rx_burst(std::span<transport::RxDatagram>) override { return 0; }
  void rx_release() override {}
  uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override {
    return uint16_t(pkts.size());
  }
  uint32_t max_datagram() const override { return 1500 - 28; }
  transport::PeerAddress local_address() const override { return {}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  transport::TransportConfig cfg;
  cfg.window = 64;
  cfg.max_payload = 1500 - 28 - uint32_t(wire::kHeaderSize);
  cfg.cwnd_initial = 16;
  uint64_t now = 1'000'000;
  transport::Connection conn(cfg, kSession, 2, 1 << 16, now);
  conn.set_peer({});
  DiscardPort port;
  std::vector<uint8_t> msg(20000, 0x5a);
  conn.sender(0).submit_message(msg);
  conn.sender(1).submit_message(std::span(msg).first(3000));
  conn.flush(now, port);

  fuzz::Pieces in({data, size});
  std::span<const uint8_t> piece;
  std::vector<uint8_t> d;
  while (in.next(piece)) {
    if (piece.empty()) continue;
    const uint8_t mode = piece[0];
    d.assign(piece.begin() + 1, piece.end());
    if (d.size() >= wire::kHeaderSize) {
      if (mode & 4) wire::put_be32(d.data() + 4, kSession);
      if (mode & 1) wire::put_be32(d.data() + 20, uint32_t(d.size() - wire::kHeaderSize));
      if (mode & 2) {
        // A sealed datagram's crc is 0 (MMP.md "Encryption"), anything else's its CRC32C.
        const auto payload = std::span<const uint8_t>(d).subspan(wire::kHeaderSize);
        wire::put_be32(d.data() + 28, 0);
        if (!(wire::get_be16(d.data() + 10) & wire::flag::sealed)) {
          wire::put_be32(d.data() + 28, wire::packet_crc(std::span<const uint8_t, wire::kHeaderSize>(
                                                             d.data(), wire::kHeaderSize),
                                                         payload));
        }
      }
    }
    wire::Header h;
    std::span<const uint8_t> payload;
    if (wire::decode_packet(d, h, payload) != wire::DecodeError::ok) continue;
    MM_FUZZ_CHECK(payload.size() == h.len && payload.data() == d.data() + wire::kHeaderSize);
    std::array<uint8_t, wire::kHeaderSize> again;
    wire::encode_header(h, again);
    MM_FUZZ_CHECK(std::memcmp(again.data(), d.data(), wire::kHeaderSize) == 0);
    if (h.type == wire::PacketType::ack) {
      wire::AckPayload a;
      if (wire::decode_ack(payload, a)) {
        std::array<uint8_t, wire::kAckMaxSize> out;
        const size_t n = wire::encode_ack(a, out);
        MM_FUZZ_CHECK(n == payload.size() && std::memcmp(out.data(), payload.data(), n) == 0);
      }
    }
    if (h.session != kSession) continue;
    now += 1000 + (mode >> 3) * 200'000ull;
    if (conn.authentic(h, payload)) conn.on_packet(h, payload, now);
    if (mode & 0x80) conn.flush(now, port);
  }
  conn.flush(now + 10'000'000, port);
  return 0;
}
