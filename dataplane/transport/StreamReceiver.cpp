#include "dataplane/transport/StreamReceiver.hpp"

#include "dataplane/transport/StreamSender.hpp"

#include <algorithm>

namespace mm::transport {

StreamReceiver::StreamReceiver(const TransportConfig& cfg, size_t max_message)
    : cfg_(cfg),
      mask_(cfg.window - 1),
      slots_(cfg.window),
      max_message_(max_message),
      advertised_credits_(cfg.window) {}

uint8_t* StreamReceiver::slot_for(uint32_t seq, size_t len) {
  if (StreamSender::seq_lt(seq, next_) || seq - deliv_ >= cfg_.window || slot(seq).filled || len > cfg_.max_payload) {
    return nullptr;
  }
  if (payloads_.empty()) payloads_.resize(size_t(cfg_.window) * cfg_.max_payload);
  return payload(seq);
}

StreamReceiver::Accept StreamReceiver::on_data(const wire::Header& h,
                                               std::span<const uint8_t> payload, uint64_t now) {
  if (h.flags & wire::flag::ack_requested) ack_now_ = true;
  const uint32_t seq = h.seq;
  if (StreamSender::seq_lt(seq, next_) || (slot(seq).filled && seq - deliv_ < cfg_.window)) {
    // Our ACK was lost or late: say again what we have, and that this
    // one was not needed (the sender learns its timers fired too early).
    ++stats_.duplicates;
    ack_now_ = true;
    duplicate_seen_ = true;
    return Accept::duplicate;
  }
  if (seq - deliv_ >= cfg_.window || payload.size() > cfg_.max_payload) {
    ++stats_.out_of_window;
    ack_now_ = true;
    return Accept::out_of_window;
  }
  // Allocated on first use: a session has many streams, few carry data.
  if (payloads_.empty()) payloads_.resize(size_t(cfg_.window) * cfg_.max_payload);
  Slot& s = slot(seq);
  s.filled = true;
  s.len = uint32_t(payload.size());
  s.msg = h.msg;
  s.flags = h.flags;
  // An encrypted session decrypted it into the slot already (slot_for).
  if (payload.data() != this->payload(seq)) std::memcpy(this->payload(seq), payload.data(), payload.size());
  ++stats_.packets;
  stats_.payload_bytes += payload.size();
  if (StreamSender::seq_lt(highest_, seq + 1)) highest_ = seq + 1;
  if (seq == next_) {
    while (slot(next_).filled && next_ - deliv_ < cfg_.window) {
      if (slot(next_).flags & wire::flag::last) ++held_;
      ++next_;
    }
  } else {
    // A hole: ACK at once so the sender sees the SACK and fast-retransmits.
    ++stats_.out_of_order;
    ack_now_ = true;
  }
  if (pending_++ == 0) first_pending_ns_ = now;
  return Accept::stored;
}

void StreamReceiver::release(uint32_t first, uint32_t end) {
  for (uint32_t seq = first; seq != end; ++seq) slot(seq).filled = false;
  deliv_ = end;
  // Window update: the sender may be stalled on the credits it last saw.
  if ((advertised_credits_ < cfg_.window / 4 && credits() >= cfg_.window / 2) ||
      (advertised_credits_ == 0 && credits() > 0)) {
    ack_now_ = true;
  }
}

wire::AckPayload StreamReceiver::make_ack() {
  wire::AckPayload a;
  a.cum_seq = next_;
  // Holes: report every packet held past cum_seq, up to the highest one.
  if (StreamSender::seq_lt(next_, highest_)) {
    const uint32_t span = std::min<uint32_t>(highest_ - next_, uint32_t(wire::kSackWords * 64));
    for (uint32_t i = 0; i < span; ++i) {
      const uint32_t seq = next_ + 1 + i;
      if (seq - deliv_ >= cfg_.window) break;
      if (!slot(seq).filled) continue;
      if (i < 64) {
        a.sack |= uint64_t(1) << i;
      } else {
        a.more[i / 64 - 1] |= uint64_t(1) << (i % 64);
        a.more_words = std::max<uint8_t>(a.more_words, uint8_t(i / 64));
      }
    }
  }
  a.credits = credits();
  a.echo_ts = probe_ts_;
  a.duplicate = duplicate_seen_;
  duplicate_seen_ = false;
  advertised_credits_ = a.credits;
  pending_ = 0;
  ack_now_ = false;
  ++stats_.acks_out;
  return a;
}

}  // namespace mm::transport
