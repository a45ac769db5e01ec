// The transport side of one session: its streams (a sender and a receiver
// each), the peer's fabric address, ACK/PROBE/CLOSE control packets and
// liveness. The engine feeds it validated packets and calls flush() to send.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dataplane/transport/DatagramPort.hpp"
#include "dataplane/transport/StreamReceiver.hpp"
#include "dataplane/transport/StreamSender.hpp"
#include "dataplane/transport/TokenBucket.hpp"
#include "dataplane/transport/TransportConfig.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace mm::transport {

struct ConnectionStats {
  uint64_t packets_tx = 0;  // every datagram sent (data, ACK, PROBE, CLOSE)
  uint64_t packets_rx = 0;  // every valid datagram of this session received
  uint64_t wire_bytes_tx = 0;  // frame bytes: Ethernet + IPv4 + UDP + MMP
  uint64_t wire_bytes_rx = 0;
  uint64_t probes_tx = 0;
  uint64_t probes_rx = 0;
  uint64_t bad_stream = 0;   // stream index the session does not have
  uint64_t bad_ack = 0;      // malformed or lying ACKs
  // Encrypted sessions (MMP.md "Encryption"): datagrams refused because
  // their GCM tag did not verify (forged, damaged, other key) or their
  // transmission number was seen before (replayed).
  uint64_t rx_bad_tag = 0;
  uint64_t rx_replayed = 0;

  ConnectionStats& operator+=(const ConnectionStats& o) {
    packets_tx += o.packets_tx;
    packets_rx += o.packets_rx;
    wire_bytes_tx += o.wire_bytes_tx;
    wire_bytes_rx += o.wire_bytes_rx;
    probes_tx += o.probes_tx;
    probes_rx += o.probes_rx;
    bad_stream += o.bad_stream;
    bad_ack += o.bad_ack;
    rx_bad_tag += o.rx_bad_tag;
    rx_replayed += o.rx_replayed;
    return *this;
  }
};

class Connection {
 public:
  // Ethernet header bytes counted on top of the UDP datagram for wire bytes.
  static constexpr uint32_t kEthOverhead = 14;

  Connection(const TransportConfig& cfg, uint32_t session, uint16_t streams, size_t max_message,
             uint64_t now);

  uint32_t session() const { return session_; }
  uint16_t streams() const { return uint16_t(senders_.size()); }
  StreamSender& sender(uint16_t s) { return *senders_[s]; }
  StreamReceiver& receiver(uint16_t s) { return *receivers_[s]; }
  const StreamSender& sender(uint16_t s) const { return *senders_[s]; }
  const StreamReceiver& receiver(uint16_t s) const { return *receivers_[s]; }

  // The peer's address; with set_peer_queues(q > 1) its udp_port is the
  // peer's base port and stream s goes to base + wire::stream_queue(session,
  // s, q), the peer worker that owns it.
  void set_peer(const PeerAddress& p) {
    peer_ = p;
    has_peer_ = true;
    address_streams();
  }
  void set_peer_queues(uint16_t queues) {
    peer_queues_ = queues;
    address_streams();
  }
  bool has_peer() const { return has_peer_; }
  const PeerAddress& peer() const { return peer_; }
  const PeerAddress& peer_of(uint16_t stream) const { return stream_peers_[stream]; }

  // The stream this side's PROBEs and CLOSE travel on (default 0): a
  // worker that holds only some of a session's streams sends them on one
  // of its own, so they reach the peer worker that shares that stream.
  void set_control_stream(uint16_t s) { control_stream_ = s; }

  // Handles one packet of this session that passed wire validation. Returns
  // false when the packet breaks the protocol (error() says how); the
  // packet is then not acted on.
  bool on_packet(const wire::Header& h, std::span<const uint8_t> payload, uint64_t now);

  // Sends due ACKs, keep-alive PROBEs, a queued CLOSE, and data.
  uint32_t flush(uint64_t now, DatagramPort& port);

  // Gives the session a key: every packet sent carries its auth tag, and
  // authentic() then demands one on every packet received.
  void set_auth(const wire::AuthSecret& secret) {
    auth_ = std::make_unique<wire::AuthSecret>(secret);
    for (auto& s : senders_) s->set_auth(auth_.get());
  }
  bool authentic(const wire::Header& h, std::span<const uint8_t> payload) const {
    // A sealed datagram (ciphertext, no CRC) is never one of this session's.
    if (h.flags & wire::flag::sealed) return false;
    return auth_ ? wire::auth_ok(*auth_, h, payload) : h.auth == 0;
  }

  // Encrypts the session (MMP.md "Encryption"): every datagram sent is
  // sealed with AES-256-GCM under keys.tx, and every one received must be
  // opened with keys.rx. Call before the first packet, with a config
  // whose max_payload leaves room for the tag (see kTagSize).
  void set_cipher(const wire::SessionKeys& keys);
  bool encrypted() const { return tx_cipher_ != nullptr; }
  // The AES-GCM code receiving uses (openssl when not encrypted).
  wire::CipherEngine rx_cipher_engine() const {
    return rx_cipher_ ? rx_cipher_->engine() : wire::CipherEngine::openssl;
  }
  // A stream (or the control packets) ran out of nonces: nothing more can
  // be sent under these keys.
  bool nonces_exhausted() const { return nonces_out_; }
  enum class Open { ok, forged, replayed };
  // Authenticates and decrypts a datagram of an encrypted session that
  // passed decode_packet; on ok, `payload` is replaced by the plaintext.
  // The plaintext of a DATA packet its stream will store is written
  // straight into its receive-window slot (no copy later); anything else
  // into this connection's scratch, valid until the next call. A refused
  // datagram changes nothing and is counted.
  Open open(const wire::Header& h, std::span<const uint8_t>& payload);

  // Paces this session's data to `bytes_per_s` wire bytes (0: unlimited).
  // Control packets (ACK, PROBE, CLOSE) are small and not paced.
  void set_max_bandwidth(uint64_t bytes_per_s) { pacer_.set_rate(bytes_per_s); }
  // A new rate for the same pacer, keeping what it has saved up (a share
  // of a session's rate that moves between workers as their backlog does).
  void retune_bandwidth(uint64_t bytes_per_s) { pacer_.retune(bytes_per_s); }
  uint64_t max_bandwidth() const { return pacer_.rate(); }
  // A priority stream (postcopy page requests and answers) is served, and
  // paced, before every bulk stream.
  void set_priority(uint16_t stream, bool on) { priority_[stream] = on; }

  // Send windows in the port's own buffers (see StreamSender). Not for an
  // encrypted session: its windows keep plaintext that is never sent
  // itself (each transmission is sealed into a frame of its own), so they
  // stay on the heap and leave the port's window pool to others.
  void set_port_buffers(DatagramPort* port) {
    if (tx_cipher_) return;
    for (auto& s : senders_) s->set_port_buffers(port);
  }

  // Whether retransmission timers may fire in the next flush(): false
  // while the worker still has received datagrams it has not read (see
  // StreamSender::set_timers_ok).
  void set_timers_ok(bool ok) {
    for (auto& s : senders_) s->set_timers_ok(ok);
  }

  // Keep-alive PROBEs stop once a session has ended (ACKs still go out).
  void set_keepalive(bool on) { keepalive_ = on; }

  // Queues a CLOSE for the peer (sent a few times: it is not acknowledged).
  void close(wire::CloseReason reason, std::string_view text);
  bool peer_closed() const { return peer_closed_; }
  wire::CloseReason peer_close_reason() const { return peer_close_reason_; }
  const std::string& peer_close_text() const { return peer_close_text_; }

  // No valid packet from the peer for the dead timeout (only once it has
  // been heard from, or since `since_ns` for the side that starts).
  bool peer_silent(uint64_t now) const {
    return now > last_rx_ns_ && now - last_rx_ns_ > cfg_.dead_timeout_ns;
  }
  uint64_t last_rx_ns() const { return last_rx_ns_; }

  const ConnectionStats& stats() const { return stats_; }
  const std::string& error() const { return error_; }

 private:
  uint16_t src_port(uint16_t stream) const;
  void address_streams();
  void account_tx(uint32_t datagram_bytes) {
    ++stats_.packets_tx;
    stats_.wire_bytes_tx += datagram_bytes + wire::kIpUdpOverhead + kEthOverhead;
  }

  TransportConfig cfg_;
  uint32_t session_;
  std::vector<std::unique_ptr<StreamSender>> senders_;
  std::vector<std::unique_ptr<StreamReceiver>> receivers_;
  PeerAddress peer_;
  std::vector<PeerAddress> stream_peers_;  // peer_ with each stream's UDP port
  uint16_t peer_queues_ = 0;
  uint16_t control_stream_ = 0;
  bool has_peer_ = false;
  bool keepalive_ = true;
  TokenBucket pacer_;
  std::unique_ptr<wire::AuthSecret> auth_;
  std::unique_ptr<wire::PacketCipher> tx_cipher_, rx_cipher_;
  std::vector<uint8_t> seal_staging_;   // senders' fallback when the port has no frames
  std::vector<uint8_t> open_scratch_;   // plaintext of what is not stored in a window
  std::vector<wire::ReplayWindow> rx_data_replay_;  // per stream
  // ACK, PROBE and CLOSE share one count per stream: a session's streams
  // may be spread over the workers of either end, each with its own
  // Connection, and a stream's control packets come from its one owner.
  std::vector<wire::ReplayWindow> rx_ctl_replay_;  // per stream
  std::vector<uint64_t> ctl_seals_;                // per stream: the next control packet's number
  bool nonces_out_ = false;
  std::vector<bool> priority_;
  uint64_t last_rx_ns_;
  uint64_t last_tx_ns_;
  uint64_t last_probe_ns_ = 0;
  bool peer_closed_ = false;
  wire::CloseReason peer_close_reason_ = wire::CloseReason::failed;
  std::string peer_close_text_;
  uint32_t close_copies_ = 0;
  std::array<uint8_t, 2 + wire::kMaxCloseText> close_payload_{};
  uint32_t close_len_ = 0;
  ConnectionStats stats_;
  std::string error_;
};

}  // namespace mm::transport
