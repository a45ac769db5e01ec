#include "dataplane/transport/StreamSender.hpp"

#include <algorithm>
#include <cstring>

namespace mm::transport {

namespace {
// Packets a round must hold before its loss rate may shrink the window.
constexpr uint32_t kMinRoundPackets = 64;
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

StreamSender::~StreamSender() {
  if (!bufs_.empty()) buffer_port_->free_tx_buffers(bufs_);
}

void StreamSender::ensure_buffers() {
  // Allocated on first use: a session has many streams, few carry data.
  if (!bufs_.empty() || !payloads_.empty()) return;
  if (buffer_port_) {
    bufs_.resize(cfg_.window);
    if (!buffer_port_->alloc_tx_buffers(bufs_, cfg_.max_payload)) bufs_.clear();
  }
  if (bufs_.empty()) payloads_.resize(size_t(cfg_.window) * cfg_.max_payload);
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

void StreamSender::reserve_slots(std::span<std::span<uint8_t>> out) {
  for (uint32_t i = 0; i < out.size(); ++i) out[i] = reserve_at(i);
}

void StreamSender::commit_slots(std::span<const uint32_t> lens, bool each_a_message) {
  for (size_t i = 0; i < lens.size(); ++i) {
    uint16_t f = 0;
    if (each_a_message || i == 0) f |= wire::flag::first;
    if (each_a_message || i + 1 == lens.size()) f |= wire::flag::last;
    commit(lens[i], f);
  }
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

bool StreamSender::queue_rtx(uint32_t seq) {
  Slot& s = slot(seq);
  if (s.rtx_queued || s.sacked) return true;
  // A full queue only holds stale entries beyond the window; the RTO will
  // find whatever is still missing.
  if (rtx_tail_ - rtx_head_ >= rtx_.size()) return false;
  s.rtx_queued = true;
  rtx_[rtx_tail_++ % rtx_.size()] = seq;
  return true;
}

void StreamSender::check_probe(uint64_t now) {
  // RFC 8985 7 (tail loss probe), simplified: when nothing was acknowledged
  // for two smoothed RTTs plus the receiver's ACK delay, the oldest packet
  // is sent again. RACK cannot find a lost retransmission, or a lost tail,
  // while nothing newer gets delivered (a window held by its hole); the
  // probe repairs it long before the RTO would.
  if (una_ == nxt_tx_ || !timers_ok_ || srtt_ns_ == 0) return;
  // At least the profile's minimum RTO (how long a peer's worker may be
  // off its core on this platform without a loss), or longer where this
  // path's probes turned out not to be needed.
  const uint64_t pto = std::max(2 * srtt_ns_ + cfg_.ack_delay_ns, timer_floor());
  // One probe per silence: if it is not answered either, the RTO (with
  // its back-off) takes over.
  if (last_probe_ns_ > last_progress_ns_) return;
  const Slot& oldest = slot(una_);
  if (now < last_progress_ns_ || now - last_progress_ns_ < pto || now - oldest.sent_ns < pto) return;
  if (oldest.sacked || oldest.rtx_queued) return;
  last_probe_ns_ = now;
  last_timer_rtx_ns_ = now;
  ++stats_.tail_probes;
  queue_rtx(una_);
}

void StreamSender::check_rto(uint64_t now) {
  if (una_ == nxt_tx_ || !timers_ok_) return;
  const Slot& oldest = slot(una_);
  // RFC 6298 5.3: the timer restarts with every ACK that makes progress.
  const uint64_t since = std::max(oldest.sent_ns, last_progress_ns_);
  const uint64_t rto_now = std::max(rto_ns_, timer_floor());
  if (oldest.rtx_queued || oldest.sacked || now < since || now - since < rto_now) return;
  // Nothing was acknowledged for a whole RTO: a tail loss or a dead path.
  // Everything the last ACK reported missing and that was sent that long
  // ago is presumed lost (RFC 8985 6.3); what lies past its SACK bitmap
  // may well have arrived, and the ACK for the repair will say so. With
  // no ACK to go by, the oldest packet goes again. The timer backs off so
  // a slow peer is not flooded.
  ++stats_.rto_events;
  last_timer_rtx_ns_ = now;
  const uint64_t rto = rto_now;
  const uint32_t end = !seq_lt(una_, sack_end_) ? una_ + 1 : seq_lt(sack_end_, nxt_tx_) ? sack_end_ : nxt_tx_;
  for (uint32_t seq = una_; seq_lt(seq, end); ++seq) {
    const Slot& s = slot(seq);
    if (!s.sacked && now - s.sent_ns >= rto && queue_rtx(seq)) ++round_lost_;
  }
  // The window is left to the round's loss count: on a shared core a
  // peer's worker off its CPU for longer than the RTO looks like a timeout
  // and loses nothing, and halving the window for each such spell starved
  // paced sessions (twelve halvings in one 512 MiB migration).
  rto_ns_ = std::min(rto_ns_ * 2, cfg_.rto_max_ns);
}

uint64_t StreamSender::reorder_window() const {
  // RFC 8985 6.2: a quarter of the minimum RTT, bounded by the smoothed
  // RTT; at least 20 us so that packets of one burst, which share a
  // timestamp and may be handled a little apart, are not called lost.
  constexpr uint64_t kFloorNs = 20'000;
  uint64_t w = std::max(min_rtt_ns_ / 4, kFloorNs);
  if (srtt_ns_ > 0) w = std::min(w, std::max(srtt_ns_, kFloorNs));
  return w;
}

void StreamSender::on_delivered(const Slot& s, uint64_t now) {
  ++round_delivered_;
  // A retransmitted packet's ACK may be for its first transmission (MMP
  // has no timestamps to tell): taking it as the newest delivery would
  // call everything sent before the retransmission lost. Packets first
  // sent after it advance RACK instead (RFC 8985 6.2 step 2 asks for
  // this whenever the ACK cannot be told apart).
  if (s.tx_count > 1) return;
  if (s.tx_order > rack_order_) {
    rack_order_ = s.tx_order;
    rack_rtt_ns_ = now - s.sent_ns;
  }
}

void StreamSender::detect_losses(uint64_t now) {
  reorder_deadline_ = 0;
  if (rack_order_ == 0) return;
  const uint64_t allowance = rack_rtt_ns_ + reorder_window();
  // Only packets the last ACK could report on are known to be missing:
  // one past its SACK bitmap may have arrived unseen.
  const uint32_t end = seq_lt(sack_end_, nxt_tx_) ? sack_end_ : nxt_tx_;
  for (uint32_t seq = una_; seq_lt(seq, end); ++seq) {
    const Slot& s = slot(seq);
    if (s.tx_order > rack_order_) {
      // First transmissions leave in sequence order: none after this one
      // was sent before the newest delivered packet.
      if (s.tx_count <= 1) break;
      continue;
    }
    if (s.sacked || s.rtx_queued) continue;
    const uint64_t deadline = s.sent_ns + allowance;
    if (now >= deadline) {
      if (!queue_rtx(seq)) break;  // the queue is full: the rest next time
      slot(seq).found_lost = true;
      ++round_lost_;
    } else if (reorder_deadline_ == 0 || deadline < reorder_deadline_) {
      reorder_deadline_ = deadline;
    }
  }
}

void StreamSender::end_round_if_due() {
  if (seq_lt(una_, round_end_)) return;
  // A small round says little about the loss rate (one loss in eight
  // packets is 12.5 %): rounds are judged once they hold enough packets.
  if (round_lost_ + round_delivered_ < kMinRoundPackets) {
    round_end_ = nxt_tx_;
    return;
  }
  // Congestion shows as many losses in one round; isolated losses (a
  // lossy link, a dropped frame) do not shrink the window.
  if (round_lost_ > 0 && uint64_t(round_lost_) * 8 > uint64_t(round_lost_) + round_delivered_) {
    ssthresh_ = std::max(cfg_.cwnd_min, cwnd_ - cwnd_ / 4);
    cwnd_ = ssthresh_;
    acked_in_cwnd_ = 0;
    ++stats_.window_reductions;
  }
  round_end_ = nxt_tx_;
  round_lost_ = 0;
  round_delivered_ = 0;
  quiet_floor_ns_ -= quiet_floor_ns_ / 16;  // what was learned fades over rounds
}

uint32_t StreamSender::flush(uint64_t now, DatagramPort& port, const PeerAddress& to,
                             uint16_t src_port, uint64_t& budget) {
  if (reorder_deadline_ != 0 && now >= reorder_deadline_) detect_losses(now);
  check_probe(now);
  check_rto(now);
  TxDatagram batch[kBurst];
  uint32_t seqs[kBurst];
  uint16_t hflags[kBurst];
  TxBuffer frames[kBurst];
  uint32_t total = 0;

  // A burst is planned first (which packets, with which flags), then its
  // headers are sealed and, in an encrypted session, each transmission is
  // encrypted with its own nonce into a fresh port frame (or staging, which
  // the port copies): the window keeps the plaintext, so a retransmission
  // is a new encryption under a new nonce, never the old ciphertext again.
  auto plan = [&](uint32_t i, uint32_t seq, bool rtx, bool ack_req) {
    seqs[i] = seq;
    hflags[i] = uint16_t(slot(seq).flags | (rtx ? wire::flag::retransmit : 0) |
                         (ack_req ? wire::flag::ack_requested : 0));
  };
  auto header_of = [&](uint32_t i) {
    const Slot& s = slot(seqs[i]);
    wire::Header h;
    h.type = wire::PacketType::data;
    h.session = session_;
    h.stream = stream_;
    h.flags = hflags[i];
    h.seq = seqs[i];
    h.msg = s.msg;
    return h;
  };
  auto header_span = [&](uint32_t seq) { return std::span<uint8_t, wire::kHeaderSize>(header(seq), wire::kHeaderSize); };
  // Returns how many of the n planned datagrams the port took.
  auto send = [&](uint32_t n) -> uint32_t {
    bool own_frames = false;
    if (cipher_) {
      if (seals_ + n > uint64_t(UINT32_MAX) + 1) {  // no nonce left: stop rather than reuse one
        nonces_out_ = true;
        return 0;
      }
      const uint32_t room = cfg_.max_payload + tag_bytes_;
      own_frames = port.alloc_tx_frames({frames, n}, room) == n;
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t seq = seqs[i];
        const Slot& s = slot(seq);
        wire::Header h = header_of(i);
        h.auth = uint32_t(seals_++);
        uint8_t* out = own_frames ? frames[i].payload : staging_ + size_t(i) * room;
        if (!cipher_->seal(h, {payload(seq), s.len}, out, header_span(seq))) {
          if (own_frames) port.free_tx_buffers({frames, n});
          return 0;
        }
        batch[i] = TxDatagram{&to, src_port, header(seq), uint32_t(wire::kHeaderSize), out, s.len + tag_bytes_,
                              own_frames ? frames[i].handle : nullptr, own_frames};
      }
    } else {
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t seq = seqs[i];
        const Slot& s = slot(seq);
        std::span<const uint8_t> body{payload(seq), s.len};
        wire::seal_header(header_of(i), body, header_span(seq), auth_);
        batch[i] = TxDatagram{&to, src_port, header(seq), uint32_t(wire::kHeaderSize), body.data(), s.len, buffer(seq)};
      }
    }
    const uint32_t sent = port.tx_burst({batch, n});
    if (own_frames) {
      stats_.sealed_in_frame += sent;
      if (sent < n) port.free_tx_buffers({frames + sent, n - sent});  // not taken: still ours
    }
    return sent;
  };
  auto mark_sent = [&](uint32_t seq) {
    Slot& s = slot(seq);
    budget -= std::min(budget, wire_cost(s.len + tag_bytes_));
    s.sent_ns = now;
    s.tx_order = ++tx_order_;
    if (s.tx_count++ == 0) {
      ++stats_.packets;
      stats_.payload_bytes += s.len;
    } else {
      ++stats_.retransmits;
      stats_.retransmit_bytes += s.len;
      if (s.found_lost) ++stats_.fast_retransmits;
    }
    s.found_lost = false;
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
      if (planned + wire_cost(s.len + tag_bytes_) > budget) break;  // paced: the rest waits its turn
      ++rtx_head_;
      s.rtx_queued = false;
      planned += wire_cost(s.len + tag_bytes_);
      plan(n++, seq, true, true);
    }
    if (n == 0) break;
    const uint32_t sent = send(n);
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
      if (planned + wire_cost(slot(seq).len + tag_bytes_) > budget) break;
      planned += wire_cost(slot(seq).len + tag_bytes_);
      const bool last_of_queue = seq + 1 == next_;
      plan(n++, seq, false, last_of_queue);
    }
    if (n == 0) break;
    const uint32_t sent = send(n);
    for (uint32_t i = 0; i < sent; ++i) mark_sent(seqs[i]);
    nxt_tx_ += sent;
    total += sent;
    if (sent < n) break;
  }
  return total;
}

void StreamSender::update_rtt(uint64_t r) {
  // RFC 6298 smoothing; RTO = SRTT + 4 RTTVAR within the profile's bounds.
  if (min_rtt_ns_ == 0 || r < min_rtt_ns_) min_rtt_ns_ = r;
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
  if (seq_lt(nxt_tx_, cum) || ack.credits > cfg_.window) {
    ++stats_.bad_acks;
    return false;
  }
  if (ack.duplicate && last_timer_rtx_ns_ != 0 && now - last_timer_rtx_ns_ <= 2 * std::max(rto_ns_, timer_floor())) {
    // A probe or timeout that was not needed (the receiver had the packet):
    // this path goes quiet for longer than the timers allowed. Wait twice
    // as long before the next one (Eifel-style, from the receiver's report
    // instead of timestamps).
    ++stats_.spurious_timeouts;
    quiet_floor_ns_ = std::min(cfg_.rto_max_ns, 2 * timer_floor());
    last_timer_rtx_ns_ = 0;
  }
  if (seq_lt(cum, una_)) {
    // Overtaken by a newer one (the network delayed or duplicated it):
    // its SACK bits and credits are stale. A window with few losses moves
    // fast enough for an ACK delayed by reordering to fall more than a
    // window behind, so age alone does not make it a lie.
    ++stats_.stale_acks;
    return true;
  }
  const uint32_t edge = cum + ack.credits;
  if (seq_lt(right_edge_, edge)) right_edge_ = edge;

  bool progress = false;
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
      if (!s.sacked) on_delivered(s, now);
      s.tx_count = 0;
      s.sacked = false;
    }
    if (clean) update_rtt(sample);
    una_ = cum;
    progress = true;
    // Slow start up to ssthresh, then one packet per window acknowledged.
    if (cwnd_ < ssthresh_) {
      cwnd_ = std::min(cwnd_ + newly, cfg_.window);
    } else if ((acked_in_cwnd_ += newly) >= cwnd_) {
      acked_in_cwnd_ = 0;
      cwnd_ = std::min(cwnd_ + 1, cfg_.window);
    }
  }
  const uint32_t reported = 64 * ack.sack_words();
  for (uint32_t i = 0; i < reported; ++i) {
    if (!ack.sacked(i)) continue;
    const uint32_t seq = cum + 1 + i;
    if (!seq_lt(seq, nxt_tx_)) break;
    Slot& s = slot(seq);
    if (s.sacked) continue;
    s.sacked = true;
    on_delivered(s, now);
    progress = true;
  }
  if (progress) last_progress_ns_ = now;
  sack_end_ = cum + 1 + reported;
  detect_losses(now);
  end_round_if_due();
  return true;
}

}  // namespace mm::transport
