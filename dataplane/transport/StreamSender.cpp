#include "dataplane/transport/StreamSender.hpp"

#include <algorithm>
#include <cstring>

namespace mm::transport {

namespace {
constexpr uint32_t kBurst = 32;
}

StreamSender::StreamSender(const TransportConfig& cfg, uint32_t session, uint16_t stream)
    : cfg_(cfg),
      session_(session),
      stream_(stream),
      mask_(cfg.window - 1),
      slots_(cfg.window),
      headers_(size_t(cfg.window) * wire::kHeaderSize),
      rtx_(size_t(cfg.window) * 4),
      right_edge_(cfg.window),
      cwnd_(std::min(cfg.cwnd_initial, cfg.window)),
      ssthresh_(cfg.window),
      rto_ns_(std::clamp<uint64_t>(cfg.rto_min_ns * 4, cfg.rto_min_ns, cfg.rto_max_ns)) {}

void StreamSender::ensure_buffers() {
  // Allocated on first use: a session has many streams, few carry data.
  if (payloads_.empty()) payloads_.resize(size_t(cfg_.window) * cfg_.max_payload);
}

std::span<uint8_t> StreamSender::reserve_at(uint32_t i) {
  if (i >= free_slots()) return {};
  ensure_buffers();
  return {payload(next_ + i), cfg_.max_payload};
}

void StreamSender::commit(uint32_t len, uint16_t flags) {
  Slot& s = slot(next_);
  s = Slot{};
  s.len = len;
  s.msg = msg_;
  s.flags = flags & (wire::flag::first | wire::flag::last);
  if (flags & wire::flag::last) ++msg_;
  ++next_;
}

bool StreamSender::submit_message(std::span<const uint8_t> message) {
  const size_t packets = std::max<size_t>(1, (message.size() + cfg_.max_payload - 1) / cfg_.max_payload);
  if (packets > free_slots()) return false;
  ensure_buffers();
  size_t off = 0;
  for (size_t i = 0; i < packets; ++i) {
    const size_t n = std::min<size_t>(cfg_.max_payload, message.size() - off);
    std::memcpy(payload(next_), message.data() + off, n);
    uint16_t f = 0;
    if (i == 0) f |= wire::flag::first;
    if (i + 1 == packets) f |= wire::flag::last;
    commit(uint32_t(n), f);
    off += n;
  }
  return true;
}

void StreamSender::queue_rtx(uint32_t seq) {
  Slot& s = slot(seq);
  if (s.rtx_queued || s.sacked) return;
  // A full queue only holds stale entries beyond the window; the RTO will
  // find whatever is still missing.
  if (rtx_tail_ - rtx_head_ >= rtx_.size()) return;
  s.rtx_queued = true;
  rtx_[rtx_tail_++ % rtx_.size()] = seq;
}

void StreamSender::on_loss() {
  ssthresh_ = std::max(cfg_.cwnd_min, cwnd_ / 2);
  cwnd_ = ssthresh_;
  acked_in_cwnd_ = 0;
}

void StreamSender::check_rto(uint64_t now) {
  if (una_ == nxt_tx_) return;
  const Slot& oldest = slot(una_);
  if (oldest.rtx_queued || now - oldest.sent_ns < rto_ns_) return;
  // The oldest packet timed out: everything sent as long ago is presumed
  // lost too. Back off the timer so a slow peer is not flooded.
  ++stats_.rto_events;
  const uint64_t rto = rto_ns_;
  for (uint32_t seq = una_; seq != nxt_tx_; ++seq) {
    const Slot& s = slot(seq);
    if (!s.sacked && now - s.sent_ns >= rto) queue_rtx(seq);
  }
  rto_ns_ = std::min(rto_ns_ * 2, cfg_.rto_max_ns);
  on_loss();
  in_recovery_ = true;
  recover_ = nxt_tx_;
}

uint32_t StreamSender::flush(uint64_t now, DatagramPort& port, const PeerAddress& to,
                             uint16_t src_port, uint64_t& budget) {
  check_rto(now);
  TxDatagram batch[kBurst];
  uint32_t seqs[kBurst];
  uint32_t total = 0;

  auto build = [&](uint32_t i, uint32_t seq, bool rtx, bool ack_req) {
    const Slot& s = slot(seq);
    wire::Header h;
    h.type = wire::PacketType::data;
    h.session = session_;
    h.stream = stream_;
    h.flags = uint16_t(s.flags | (rtx ? wire::flag::retransmit : 0) |
                       (ack_req ? wire::flag::ack_requested : 0));
    h.seq = seq;
    h.msg = s.msg;
    std::span<const uint8_t> body{payload(seq), s.len};
    wire::seal_header(h, body, std::span<uint8_t, wire::kHeaderSize>(header(seq), wire::kHeaderSize),
                      auth_);
    batch[i] = TxDatagram{&to, src_port, header(seq), uint32_t(wire::kHeaderSize), body.data(), s.len};
    seqs[i] = seq;
  };
  auto mark_sent = [&](uint32_t seq) {
    Slot& s = slot(seq);
    budget -= std::min(budget, wire_cost(s.len));
    s.sent_ns = now;
    if (s.tx_count++ == 0) {
      ++stats_.packets;
      stats_.payload_bytes += s.len;
    } else {
      ++stats_.retransmits;
      stats_.retransmit_bytes += s.len;
    }
  };

  // Retransmissions first: the receiver cannot deliver past a hole.
  while (rtx_head_ != rtx_tail_) {
    uint32_t n = 0;
    uint64_t planned = 0;
    while (n < kBurst && rtx_head_ != rtx_tail_) {
      const uint32_t seq = rtx_[rtx_head_ % rtx_.size()];
      if (seq_lt(seq, una_) || !seq_lt(seq, nxt_tx_)) {  // acked meanwhile
        ++rtx_head_;
        continue;
      }
      Slot& s = slot(seq);
      if (s.sacked) {
        s.rtx_queued = false;
        ++rtx_head_;
        continue;
      }
      if (planned + wire_cost(s.len) > budget) break;  // paced: the rest waits its turn
      ++rtx_head_;
      s.rtx_queued = false;
      planned += wire_cost(s.len);
      build(n++, seq, true, true);
    }
    if (n == 0) break;
    const uint32_t sent = port.tx_burst({batch, n});
    for (uint32_t i = 0; i < sent; ++i) mark_sent(seqs[i]);
    total += sent;
    if (sent < n) {
      for (uint32_t i = sent; i < n; ++i) queue_rtx(seqs[i]);
      return total;  // the port is full; try again next round
    }
  }

  if (rtx_head_ != rtx_tail_) return total;  // paced retransmissions go first
  // New packets within the congestion window, the receiver's credits and
  // the pacer's budget.
  while (nxt_tx_ != next_) {
    uint32_t n = 0;
    uint64_t planned = 0;
    while (n < kBurst && nxt_tx_ + n != next_) {
      const uint32_t seq = nxt_tx_ + n;
      if (!seq_lt(seq, right_edge_) || seq - una_ >= cwnd_) break;
      if (planned + wire_cost(slot(seq).len) > budget) break;
      planned += wire_cost(slot(seq).len);
      const bool last_of_queue = seq + 1 == next_;
      build(n++, seq, false, last_of_queue);
    }
    if (n == 0) break;
    const uint32_t sent = port.tx_burst({batch, n});
    for (uint32_t i = 0; i < sent; ++i) mark_sent(seqs[i]);
    nxt_tx_ += sent;
    total += sent;
    if (sent < n) break;
  }
  return total;
}

void StreamSender::update_rtt(uint64_t r) {
  // RFC 6298 smoothing; RTO = SRTT + 4 RTTVAR within the profile's bounds.
  if (srtt_ns_ == 0) {
    srtt_ns_ = r;
    rttvar_ns_ = r / 2;
  } else {
    const uint64_t diff = srtt_ns_ > r ? srtt_ns_ - r : r - srtt_ns_;
    rttvar_ns_ = (3 * rttvar_ns_ + diff) / 4;
    srtt_ns_ = (7 * srtt_ns_ + r) / 8;
  }
  rto_ns_ = std::clamp<uint64_t>(srtt_ns_ + 4 * rttvar_ns_, cfg_.rto_min_ns, cfg_.rto_max_ns);
}

bool StreamSender::on_ack(const wire::AckPayload& ack, uint64_t now) {
  ++stats_.acks_in;
  const uint32_t cum = ack.cum_seq;
  if (seq_lt(nxt_tx_, cum) || seq_lt(cum, una_ - cfg_.window) || ack.credits > cfg_.window) {
    ++stats_.bad_acks;
    return false;
  }
  const uint32_t edge = cum + ack.credits;
  if (seq_lt(right_edge_, edge)) right_edge_ = edge;

  if (seq_lt(una_, cum)) {
    // Karn: only an advance that no retransmission caused gives an RTT
    // sample (a hole filled late would make the newest packet look slow).
    const Slot& newest = slot(cum - 1);
    const uint64_t sample = now - newest.sent_ns;
    bool clean = newest.tx_count == 1;
    const uint32_t newly = cum - una_;
    for (uint32_t seq = una_; seq != cum; ++seq) {
      Slot& s = slot(seq);
      clean &= s.tx_count == 1;
      s.tx_count = 0;
      s.sacked = false;
    }
    if (clean) update_rtt(sample);
    una_ = cum;
    dupacks_ = 0;
    last_progress_ns_ = now;
    if (in_recovery_ && !seq_lt(una_, recover_)) in_recovery_ = false;
    if (!in_recovery_) {
      // Slow start up to ssthresh, then one packet per window acknowledged.
      if (cwnd_ < ssthresh_) {
        cwnd_ = std::min(cwnd_ + newly, cfg_.window);
      } else if ((acked_in_cwnd_ += newly) >= cwnd_) {
        acked_in_cwnd_ = 0;
        cwnd_ = std::min(cwnd_ + 1, cfg_.window);
      }
    }
  } else if (cum == una_ && una_ != nxt_tx_ && ack.sack != 0) {
    ++dupacks_;
  }

  if (seq_lt(cum, una_)) return true;  // a late ACK: its SACK bits are stale
  uint32_t highest_sacked = una_;
  for (uint32_t i = 0; i < 64; ++i) {
    if (!(ack.sack & (uint64_t(1) << i))) continue;
    const uint32_t seq = cum + 1 + i;
    if (!seq_lt(seq, nxt_tx_)) break;
    slot(seq).sacked = true;
    highest_sacked = seq;
  }
  // Fast retransmit: the same hole reported three times (WIRE.md).
  if (dupacks_ == 3) {
    ++stats_.fast_retransmits;
    for (uint32_t seq = una_; seq_lt(seq, highest_sacked); ++seq) queue_rtx(seq);
    if (!in_recovery_) {
      on_loss();
      in_recovery_ = true;
      recover_ = nxt_tx_;
    }
  }
  return true;
}

}  // namespace mm::transport
