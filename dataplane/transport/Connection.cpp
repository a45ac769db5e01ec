#include "dataplane/transport/Connection.hpp"

#include <algorithm>
#include <cstdio>

namespace mm::transport {

namespace {
constexpr uint32_t kCloseCopies = 3;
// Control packets are built into this many slots per flush.
constexpr uint32_t kCtlBurst = 32;
}  // namespace

std::string to_string(const PeerAddress& a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x/%u.%u.%u.%u:%u", a.mac[0],
                a.mac[1], a.mac[2], a.mac[3], a.mac[4], a.mac[5], a.ip >> 24, (a.ip >> 16) & 255,
                (a.ip >> 8) & 255, a.ip & 255, a.udp_port);
  return buf;
}

Connection::Connection(const TransportConfig& cfg, uint32_t session, uint16_t streams,
                       size_t max_message, uint64_t now)
    : cfg_(cfg), session_(session), last_rx_ns_(now), last_tx_ns_(now) {
  for (uint16_t s = 0; s < streams; ++s) {
    senders_.push_back(std::make_unique<StreamSender>(cfg, session, s));
    receivers_.push_back(std::make_unique<StreamReceiver>(cfg, max_message));
  }
  priority_.assign(streams, false);
  stream_peers_.resize(streams);
}

void Connection::address_streams() {
  for (uint16_t s = 0; s < stream_peers_.size(); ++s) {
    stream_peers_[s] = peer_;
    if (peer_queues_ > 1) stream_peers_[s].udp_port = uint16_t(peer_.udp_port + wire::stream_queue(session_, s, peer_queues_));
  }
}

uint16_t Connection::src_port(uint16_t stream) const {
  // dataplane/wire/MMP.md "Encapsulation": the UDP source port is a hash of (session, stream) so that NIC
  // RSS spreads streams; kept in the dynamic range.
  uint32_t h = session_ * 0x9E3779B1u ^ (uint32_t(stream) * 0x85EBCA6Bu);
  h ^= h >> 16;
  return uint16_t(49152 + (h % 16384));
}

void Connection::set_cipher(const wire::SessionKeys& keys) {
  const auto rx_dir = keys.tx_direction == wire::Direction::source_to_destination
                          ? wire::Direction::destination_to_source
                          : wire::Direction::source_to_destination;
  tx_cipher_ = std::make_unique<wire::PacketCipher>(keys.tx, keys.tx_direction, true, keys.engine);
  rx_cipher_ = std::make_unique<wire::PacketCipher>(keys.rx, rx_dir, false, keys.engine);
  seal_staging_.resize(size_t(StreamSender::kBurst) * (cfg_.max_payload + wire::kTagSize));
  open_scratch_.resize(wire::kMaxPayload);
  rx_data_replay_.assign(senders_.size(), wire::ReplayWindow{});
  rx_ctl_replay_.assign(senders_.size(), wire::ReplayWindow{});
  ctl_seals_.assign(senders_.size(), 0);
  for (auto& s : senders_) {
    s->set_port_buffers(nullptr);  // see set_port_buffers
    s->set_cipher(tx_cipher_.get(), seal_staging_.data());
  }
}

Connection::Open Connection::open(const wire::Header& h, std::span<const uint8_t>& payload) {
  if (payload.size() < wire::kTagSize) {
    ++stats_.rx_bad_tag;
    return Open::forged;
  }
  const size_t len = payload.size() - wire::kTagSize;
  // Data and control packets number their transmissions per stream, each
  // on its own count (MMP.md "Encryption"); a stream the session does not
  // have is authenticated all the same and then refused by on_packet (a
  // CLOSE on one is checked against stream 0's control count).
  const bool data = h.type == wire::PacketType::data;
  wire::ReplayWindow* replay = data ? (h.stream < rx_data_replay_.size() ? &rx_data_replay_[h.stream] : nullptr)
                                    : &rx_ctl_replay_[h.stream < rx_ctl_replay_.size() ? h.stream : 0];
  if (replay && !replay->fresh(h.auth)) {
    ++stats_.rx_replayed;
    return Open::replayed;
  }
  uint8_t* out = nullptr;
  if (data && h.stream < receivers_.size()) out = receivers_[h.stream]->slot_for(h.seq, len);
  if (!out) out = open_scratch_.data();
  if (!rx_cipher_->open(h, payload, out)) {
    ++stats_.rx_bad_tag;
    return Open::forged;
  }
  if (replay) replay->mark(h.auth);
  payload = {out, len};
  return Open::ok;
}

bool Connection::on_packet(const wire::Header& h, std::span<const uint8_t> payload, uint64_t now) {
  if (h.type != wire::PacketType::close && h.stream >= senders_.size()) {
    ++stats_.bad_stream;
    error_ = "packet for stream " + std::to_string(h.stream) + " of a session with " +
             std::to_string(senders_.size()) + " streams";
    return false;
  }
  ++stats_.packets_rx;
  const size_t tag = rx_cipher_ ? wire::kTagSize : 0;
  stats_.wire_bytes_rx += payload.size() + tag + wire::kHeaderSize + wire::kIpUdpOverhead + kEthOverhead;
  last_rx_ns_ = now;
  switch (h.type) {
    case wire::PacketType::data:
      receivers_[h.stream]->on_data(h, payload, now);
      return true;
    case wire::PacketType::ack: {
      wire::AckPayload ack;
      const bool ok = wire::decode_ack(payload, ack);
      ack.duplicate = (h.flags & wire::flag::duplicate) != 0;
      if (!ok || !senders_[h.stream]->on_ack(ack, now)) {
        ++stats_.bad_ack;
        error_ = "ACK that acknowledges packets never sent";
        return false;
      }
      return true;
    }
    case wire::PacketType::probe:
      ++stats_.probes_rx;
      if (payload.size() != wire::kProbeSize) {
        error_ = "PROBE with a payload of " + std::to_string(payload.size()) + " bytes";
        return false;
      }
      receivers_[h.stream]->on_probe(wire::get_be64(payload.data()));
      return true;
    case wire::PacketType::close:
      if (payload.size() < 2 || payload.size() > 2 + wire::kMaxCloseText) {
        error_ = "CLOSE with a payload of " + std::to_string(payload.size()) + " bytes";
        return false;
      }
      peer_closed_ = true;
      peer_close_reason_ = wire::CloseReason(wire::get_be16(payload.data()));
      peer_close_text_.assign(reinterpret_cast<const char*>(payload.data() + 2), payload.size() - 2);
      return true;
  }
  return false;
}

void Connection::close(wire::CloseReason reason, std::string_view text) {
  text = text.substr(0, wire::kMaxCloseText);
  wire::put_be16(close_payload_.data(), uint16_t(reason));
  std::copy(text.begin(), text.end(), close_payload_.begin() + 2);
  close_len_ = uint32_t(2 + text.size());
  close_copies_ = kCloseCopies;
}

uint32_t Connection::flush(uint64_t now, DatagramPort& port) {
  if (!has_peer_) return 0;
  // Room for the largest control payload (a CLOSE) and, encrypted, its tag.
  std::array<std::array<uint8_t, wire::kHeaderSize + 2 + wire::kMaxCloseText + wire::kTagSize>, kCtlBurst> ctl;
  static_assert(wire::kAckMaxSize <= 2 + wire::kMaxCloseText);
  std::array<TxDatagram, kCtlBurst> batch;
  uint32_t n = 0;
  auto add_ctl = [&](wire::PacketType type, uint16_t stream, std::span<const uint8_t> body,
                     uint8_t* body_store, uint16_t flags = 0) {
    wire::Header h;
    h.type = type;
    h.flags = flags;
    h.session = session_;
    h.stream = stream;
    auto hdr = std::span<uint8_t, wire::kHeaderSize>(ctl[n].data(), wire::kHeaderSize);
    if (tx_cipher_) {
      // Sealed into the slot's own body area (in place for ACK and PROBE).
      uint64_t& seals = ctl_seals_[stream < ctl_seals_.size() ? stream : 0];
      if (seals > UINT32_MAX) {  // no nonce left: nothing more is sent
        nonces_out_ = true;
        return;
      }
      h.auth = uint32_t(seals++);
      uint8_t* out = ctl[n].data() + wire::kHeaderSize;
      if (!tx_cipher_->seal(h, body, out, hdr)) return;
      batch[n] = TxDatagram{&stream_peers_[stream], src_port(stream), ctl[n].data(), uint32_t(wire::kHeaderSize), out,
                            uint32_t(body.size() + wire::kTagSize)};
    } else {
      wire::seal_header(h, body, hdr, auth_.get());
      batch[n] = TxDatagram{&stream_peers_[stream], src_port(stream), ctl[n].data(), uint32_t(wire::kHeaderSize),
                            body_store, uint32_t(body.size())};
    }
    ++n;
  };

  if (close_copies_ > 0) {
    add_ctl(wire::PacketType::close, control_stream_, {close_payload_.data(), close_len_}, close_payload_.data());
    --close_copies_;
  }
  for (uint16_t s = 0; s < receivers_.size() && n < kCtlBurst; ++s) {
    if (!receivers_[s]->ack_due(now)) continue;
    uint8_t* body = ctl[n].data() + wire::kHeaderSize;
    const wire::AckPayload ack = receivers_[s]->make_ack();
    const size_t len = wire::encode_ack(ack, {body, wire::kAckMaxSize});
    add_ctl(wire::PacketType::ack, s, {body, len}, body, ack.duplicate ? wire::flag::duplicate : uint16_t(0));
  }
  // Keep-alive, and a probe for a sender stalled on credits (the window
  // update that would reopen it may have been lost).
  const bool stalled = std::any_of(senders_.begin(), senders_.end(),
                                   [](auto& s) { return s->blocked_by_credits(); });
  const uint64_t probe_every = stalled ? senders_[0]->rto_ns() : cfg_.keepalive_ns;
  // (Timestamps taken on this thread may be a little ahead of `now`.)
  const uint64_t last = std::max(last_tx_ns_, last_probe_ns_);
  if (keepalive_ && n < kCtlBurst && now > last && now - last >= probe_every) {
    uint8_t* body = ctl[n].data() + wire::kHeaderSize;
    wire::put_be64(body, now);
    add_ctl(wire::PacketType::probe, control_stream_, {body, wire::kProbeSize}, body);
    last_probe_ns_ = now;
    ++stats_.probes_tx;
  }
  uint32_t sent = 0;
  if (n > 0) {
    sent = port.tx_burst({batch.data(), n});
    for (uint32_t i = 0; i < sent; ++i) account_tx(batch[i].head_len + batch[i].body_len);
  }
  // Strict priority: latency streams take the pacer's budget first.
  uint64_t budget = pacer_.available(now);
  const uint64_t budget_before = budget;
  for (int pass = 0; pass < 2; ++pass) {
    for (uint16_t s = 0; s < senders_.size(); ++s) {
      if (priority_[s] != (pass == 0)) continue;
      const SenderStats before = senders_[s]->stats();
      const uint32_t k = senders_[s]->flush(now, port, stream_peers_[s], src_port(s), budget);
      if (k == 0) {
        nonces_out_ |= senders_[s]->nonces_exhausted();
        continue;
      }
      sent += k;
      const SenderStats& after = senders_[s]->stats();
      const uint64_t pkts = (after.packets - before.packets) + (after.retransmits - before.retransmits);
      const uint64_t bytes = (after.payload_bytes - before.payload_bytes) +
                             (after.retransmit_bytes - before.retransmit_bytes);
      stats_.packets_tx += pkts;
      const uint32_t tag = tx_cipher_ ? uint32_t(wire::kTagSize) : 0;
      stats_.wire_bytes_tx += bytes + pkts * (wire::kHeaderSize + tag + wire::kIpUdpOverhead + kEthOverhead);
    }
  }
  pacer_.consume(budget_before - budget);
  if (sent > 0) last_tx_ns_ = now;
  return sent;
}

}  // namespace mm::transport
