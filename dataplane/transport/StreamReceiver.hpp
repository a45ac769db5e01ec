// Receiving half of one reliable MMP stream: a reorder window of W packets,
// cumulative ACK + SACK bitmap + credits, and in-order delivery of whole
// messages (FIRST..LAST) to a sink that may push back.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "dataplane/transport/MessageStream.hpp"
#include "dataplane/transport/TransportConfig.hpp"
#include "dataplane/wire/Mmp.hpp"

namespace mm::transport {

struct ReceiverStats {
  uint64_t packets = 0;       // stored data packets
  uint64_t payload_bytes = 0;
  uint64_t duplicates = 0;    // already received (a retransmit that was not needed)
  uint64_t out_of_window = 0; // beyond the credits we gave: dropped
  uint64_t out_of_order = 0;  // stored ahead of a hole
  uint64_t messages = 0;      // delivered to the sink
  uint64_t messages_in_place = 0;  // ... of them spanning packets, handed over where they lie
  uint64_t acks_out = 0;

  ReceiverStats& operator+=(const ReceiverStats& o) {
    packets += o.packets;
    payload_bytes += o.payload_bytes;
    duplicates += o.duplicates;
    out_of_window += o.out_of_window;
    out_of_order += o.out_of_order;
    messages += o.messages;
    messages_in_place += o.messages_in_place;
    acks_out += o.acks_out;
    return *this;
  }
};

class StreamReceiver final : public MessageReceiver {
 public:
  enum class Accept { stored, duplicate, out_of_window };

  StreamReceiver(const TransportConfig& cfg, size_t max_message);

  Accept on_data(const wire::Header& h, std::span<const uint8_t> payload, uint64_t now);
  // Where on_data would store packet `seq` of `len` bytes, or nullptr when
  // it would not store it (a duplicate, out of the window, too large). An
  // encrypted session decrypts into it; on_data then finds its payload in
  // place. Nothing changes until on_data.
  uint8_t* slot_for(uint32_t seq, size_t len);
  // A PROBE asks for an immediate ACK; its timestamp is echoed back.
  void on_probe(uint64_t ts) {
    probe_ts_ = ts;
    ack_now_ = true;
  }

  // Hands complete messages, in order, to sink(std::span<const uint8_t>) ->
  // bool. Stops at the first message the sink refuses (it is offered again
  // next time). Returns messages delivered, or -1 on a framing violation
  // (segments out of order, wrong message number, message too large).
  template <class Sink>
  int deliver(Sink&& sink);
  int deliver_to(MessageSink sink) override { return deliver(sink); }

  bool ack_due(uint64_t now) const {
    return ack_now_ || pending_ >= cfg_.ack_every ||
           (pending_ > 0 && now - first_pending_ns_ >= cfg_.ack_delay_ns);
  }
  wire::AckPayload make_ack();
  uint32_t credits() const {
    if (max_held_ != 0 && held_ >= max_held_) return 0;
    return deliv_ + cfg_.window - next_;
  }
  // At most n whole messages received in order and not yet taken by the
  // sink (0: no limit): past it no credits are given, so a sink that falls
  // behind -- a destination QEMU slower than the fabric -- holds the sender
  // back by messages, not only by packets (a message of PAGE_STORED records
  // is one packet for 128 guest pages).
  void set_max_held_messages(uint32_t n) { max_held_ = n; }
  uint32_t held_messages() const { return held_; }
  bool drained() const override { return deliv_ == next_; }
  const ReceiverStats& stats() const { return stats_; }
  const char* error() const override { return error_; }

 private:
  struct Slot {
    uint32_t len = 0;
    uint32_t msg = 0;
    uint16_t flags = 0;
    bool filled = false;
  };
  Slot& slot(uint32_t seq) { return slots_[seq & mask_]; }
  uint8_t* payload(uint32_t seq) { return payloads_.data() + size_t(seq & mask_) * cfg_.max_payload; }
  void release(uint32_t first, uint32_t end);
  int fail(const char* why) {
    error_ = why;
    return -1;
  }

  TransportConfig cfg_;
  uint32_t mask_;
  std::vector<Slot> slots_;
  size_t max_message_;
  std::vector<uint8_t> payloads_;
  std::vector<uint8_t> assembly_;
  uint32_t deliv_ = 0;  // oldest packet not yet consumed by the sink
  uint32_t next_ = 0;   // first packet not received (cumulative ACK)
  uint32_t highest_ = 0;  // one past the highest packet received
  uint32_t msg_ = 0;    // message number expected next
  uint32_t pending_ = 0;
  uint64_t first_pending_ns_ = 0;
  uint64_t probe_ts_ = 0;
  uint32_t advertised_credits_ = 0;
  uint32_t max_held_ = 0;  // set_max_held_messages
  uint32_t held_ = 0;      // whole messages in [deliv_, next_)
  bool ack_now_ = false;
  bool duplicate_seen_ = false;  // since the last ACK
  const char* error_ = nullptr;
  ReceiverStats stats_;
};

template <class Sink>
int StreamReceiver::deliver(Sink&& sink) {
  int delivered = 0;
  while (deliv_ != next_) {
    const Slot& head = slot(deliv_);
    if (!(head.flags & wire::flag::first)) return fail("message does not start with FIRST");
    if (head.msg != msg_) return fail("message number out of sequence");
    if (head.flags & wire::flag::last) {
      if (!sink(std::span<const uint8_t>(payload(deliv_), head.len))) return delivered;
      release(deliv_, deliv_ + 1);
    } else {
      // A message spanning packets is delivered once all of it is here.
      uint32_t end = deliv_ + 1;
      size_t total = head.len;
      for (;; ++end) {
        if (end == next_) return delivered;
        const Slot& s = slot(end);
        if (s.msg != msg_ || (s.flags & wire::flag::first)) return fail("segment of another message");
        total += s.len;
        if (s.flags & wire::flag::last) break;
      }
      if (total > max_message_) return fail("message larger than negotiated");
      // The window is one buffer: a message whose packets do not wrap
      // around its end and are full but for the last lies there in one
      // piece and is handed over in place. Only the others are assembled.
      const uint32_t packets = end + 1 - deliv_;
      const bool in_place = (deliv_ & mask_) + packets <= cfg_.window &&
                            total == size_t(packets - 1) * cfg_.max_payload + slot(end).len;
      const uint8_t* at = payload(deliv_);
      if (!in_place) {
        if (assembly_.size() < max_message_) assembly_.resize(max_message_);
        size_t off = 0;
        for (uint32_t seq = deliv_; seq != end + 1; ++seq) {
          std::memcpy(assembly_.data() + off, payload(seq), slot(seq).len);
          off += slot(seq).len;
        }
        at = assembly_.data();
      }
      if (!sink(std::span<const uint8_t>(at, total))) return delivered;
      if (in_place) ++stats_.messages_in_place;
      release(deliv_, end + 1);
    }
    ++msg_;
    if (held_ > 0 && held_-- == max_held_ && advertised_credits_ == 0 && credits() > 0) ack_now_ = true;
    ++stats_.messages;
    ++delivered;
  }
  return delivered;
}

}  // namespace mm::transport
