// Sending half of one reliable MMP stream: sequence numbers, the window of
// packets in flight, ACK/SACK processing, receiver credits and a congestion
// window. Loss is found from the SACK scoreboard by time (RACK, RFC 8985):
// a packet is lost once a packet sent after it was delivered and a
// reordering allowance has passed; the RTO (RFC 6298, restarted by every
// ACK that makes progress) only covers tail losses and dead paths. The
// window shrinks only for rounds that lose more than an eighth of their
// packets (congestion), not for isolated losses. It owns copies of the
// payloads it may have to send again; nothing here allocates after the
// first data packet.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "dataplane/transport/DatagramPort.hpp"
#include "dataplane/transport/MessageStream.hpp"
#include "dataplane/transport/TransportConfig.hpp"
#include "dataplane/wire/AuthTag.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace mm::transport {

struct SenderStats {
  uint64_t packets = 0;      // first transmissions
  uint64_t retransmits = 0;  // every retransmission (RTO + fast)
  uint64_t fast_retransmits = 0;  // packets found lost from the SACK scoreboard (RACK)
  uint64_t rto_events = 0;
  uint64_t window_reductions = 0;  // rounds that lost enough to shrink the window
  uint64_t tail_probes = 0;        // oldest packet sent again after 2 RTTs without an ACK
  uint64_t spurious_timeouts = 0;  // a probe or RTO the receiver reported as not needed
  uint64_t payload_bytes = 0;  // payload bytes first sent
  uint64_t retransmit_bytes = 0;
  uint64_t acks_in = 0;
  uint64_t bad_acks = 0;       // ACKs acknowledging what was never sent
  uint64_t stale_acks = 0;     // ACKs older than one already processed: ignored
  uint64_t sealed_in_frame = 0;  // encrypted session: transmissions sealed straight into a port frame

  SenderStats& operator+=(const SenderStats& o) {
    packets += o.packets;
    retransmits += o.retransmits;
    fast_retransmits += o.fast_retransmits;
    rto_events += o.rto_events;
    window_reductions += o.window_reductions;
    tail_probes += o.tail_probes;
    spurious_timeouts += o.spurious_timeouts;
    payload_bytes += o.payload_bytes;
    retransmit_bytes += o.retransmit_bytes;
    acks_in += o.acks_in;
    bad_acks += o.bad_acks;
    stale_acks += o.stale_acks;
    sealed_in_frame += o.sealed_in_frame;
    return *this;
  }
};

class StreamSender final : public MessageSender {
 public:
  StreamSender(const TransportConfig& cfg, uint32_t session, uint16_t stream);
  ~StreamSender();
  StreamSender(const StreamSender&) = delete;
  StreamSender& operator=(const StreamSender&) = delete;

  // Where the send window's memory comes from: the port's own buffers when
  // it has them (sent by reference, no copy), else this sender's heap.
  // Set before the first reserve(); the port must outlive the sender.
  void set_port_buffers(DatagramPort* port) { buffer_port_ = port; }
  bool zero_copy() const { return !bufs_.empty(); }

  // Packets that can still be queued (free slots of the window).
  uint32_t free_slots() const override { return cfg_.window - (next_ - una_); }
  // Packets queued and not yet acknowledged (sent or waiting to be).
  uint32_t unacked() const override { return next_ - una_; }
  // Payload capacity of one packet.
  uint32_t max_payload() const { return cfg_.max_payload; }
  uint32_t slot_size() const override { return cfg_.max_payload; }

  // Zero-copy queueing of a packet: fill the span from reserve() (empty when
  // the window is full), then commit() how many bytes were written.
  // flags: wire::flag::first / last mark message boundaries.
  std::span<uint8_t> reserve() { return reserve_at(0); }
  // The i-th free slot after the next one (i < free_slots()), so that one
  // readv() can fill several packets; commit() them in order.
  std::span<uint8_t> reserve_at(uint32_t i);
  void commit(uint32_t len, uint16_t flags);
  // Queues a whole message, split into packets; false (nothing queued) when
  // it does not fit into the free slots.
  bool submit_message(std::span<const uint8_t> message) override;
  // MessageSender: reserve_at() and commit() over a batch of slots.
  void reserve_slots(std::span<std::span<uint8_t>> out) override;
  void commit_slots(std::span<const uint32_t> lens, bool each_a_message) override;

  // Transmits what is due: retransmissions first, then new packets within
  // min(cwnd, receiver credits) and `budget` wire bytes (the pacer's; each
  // packet taken is subtracted). Returns packets handed to the port.
  uint32_t flush(uint64_t now, DatagramPort& port, const PeerAddress& to, uint16_t src_port,
                 uint64_t& budget);
  // Frame bytes one packet of `payload` bytes costs on the wire.
  static uint64_t wire_cost(uint32_t payload) {
    return payload + wire::kHeaderSize + wire::kIpUdpOverhead + 14;
  }
  static constexpr uint32_t kBurst = 32;

  // Processes an ACK for this stream. Returns false when it acknowledges
  // packets never sent (a lying or confused peer).
  bool on_ack(const wire::AckPayload& ack, uint64_t now);

  // Whether timers may fire now: false while the worker has datagrams
  // queued that it has not read yet (ACKs that would stop a timeout may be
  // among them: a worker that was off its core must read them first).
  void set_timers_ok(bool ok) { timers_ok_ = ok; }

  // The session's auth secret (owned by its Connection), or none.
  void set_auth(const wire::AuthSecret* secret) { auth_ = secret; }
  // An encrypted session (MMP.md "Encryption"): the window keeps the
  // plaintext and every transmission is sealed with a nonce of its own
  // (the stream's transmission number) into a fresh port frame, or into
  // `staging` (kBurst x (max_payload + kTagSize) bytes, owned by the
  // Connection) when the port has no frames to give. Set before the first
  // packet; the cipher outlives the sender.
  void set_cipher(const wire::PacketCipher* tx, uint8_t* staging) {
    cipher_ = tx;
    staging_ = staging;
    tag_bytes_ = tx ? uint32_t(wire::kTagSize) : 0;
  }
  // Transmissions sealed so far (the next nonce's transmission number).
  // At 2^32 the stream stops sending rather than reuse a nonce, and says
  // so (the session then fails: a new one gets new keys).
  uint64_t seals() const { return seals_; }
  bool nonces_exhausted() const { return nonces_out_; }
  // Tests of that limit start the count elsewhere than 0.
  void start_seals_at(uint64_t n) { seals_ = n; }

  bool idle() const { return una_ == next_; }  // everything acknowledged
  bool has_unsent() const { return nxt_tx_ != next_; }
  uint32_t unsent() const override { return next_ - nxt_tx_; }  // queued, never transmitted yet
  bool blocked_by_credits() const { return has_unsent() && !seq_lt(nxt_tx_, right_edge_); }
  uint64_t last_progress_ns() const { return last_progress_ns_; }
  uint64_t rto_ns() const { return rto_ns_; }
  uint64_t srtt_ns() const { return srtt_ns_; }
  uint64_t min_rtt_ns() const { return min_rtt_ns_; }
  uint32_t cwnd() const { return cwnd_; }
  uint32_t in_flight() const { return nxt_tx_ - una_; }
  const SenderStats& stats() const { return stats_; }

  static bool seq_lt(uint32_t a, uint32_t b) { return int32_t(a - b) < 0; }

 private:
  struct Slot {
    uint64_t sent_ns = 0;
    uint64_t tx_order = 0;  // this stream's transmission count when it last left
    uint32_t len = 0;
    uint32_t msg = 0;
    uint16_t flags = 0;
    uint8_t tx_count = 0;
    bool sacked = false;
    bool rtx_queued = false;
    bool found_lost = false;  // RACK queued it (counted when it leaves)
  };
  Slot& slot(uint32_t seq) { return slots_[seq & mask_]; }
  uint8_t* payload(uint32_t seq) {
    return bufs_.empty() ? payloads_.data() + size_t(seq & mask_) * cfg_.max_payload : bufs_[seq & mask_].payload;
  }
  void* buffer(uint32_t seq) const { return bufs_.empty() ? nullptr : bufs_[seq & mask_].handle; }
  uint8_t* header(uint32_t seq) { return headers_.data() + size_t(seq & mask_) * wire::kHeaderSize; }
  void ensure_buffers();
  bool queue_rtx(uint32_t seq);  // false: the queue is full
  void check_rto(uint64_t now);
  void check_probe(uint64_t now);
  void update_rtt(uint64_t sample_ns);
  // A packet was delivered (cumulatively or by SACK): RACK's newest
  // delivered transmission.
  void on_delivered(const Slot& s, uint64_t now);
  // Marks for retransmission what RACK deems lost; arms the reorder timer
  // for packets that may still only be late.
  void detect_losses(uint64_t now);
  uint64_t reorder_window() const;
  uint64_t timer_floor() const { return std::max(cfg_.rto_min_ns, quiet_floor_ns_); }
  void end_round_if_due();

  TransportConfig cfg_;
  const wire::AuthSecret* auth_ = nullptr;
  const wire::PacketCipher* cipher_ = nullptr;
  uint8_t* staging_ = nullptr;
  uint32_t tag_bytes_ = 0;
  uint64_t seals_ = 0;
  bool nonces_out_ = false;
  uint32_t session_;
  uint16_t stream_;
  uint32_t mask_;
  std::vector<Slot> slots_;
  DatagramPort* buffer_port_ = nullptr;
  std::vector<TxBuffer> bufs_;     // the window in port buffers, or
  std::vector<uint8_t> payloads_;  // ... on the heap
  std::vector<uint8_t> headers_;
  std::vector<uint32_t> rtx_;  // ring of seqs to retransmit
  uint32_t rtx_head_ = 0, rtx_tail_ = 0;

  uint32_t una_ = 0;     // oldest unacknowledged
  uint32_t nxt_tx_ = 0;  // next never-transmitted
  uint32_t next_ = 0;    // next to assign
  uint32_t msg_ = 0;     // message number of the message being queued
  uint32_t right_edge_;  // receiver credits: may send seq < right_edge_
  uint32_t cwnd_;
  uint32_t ssthresh_;
  uint32_t acked_in_cwnd_ = 0;
  uint64_t srtt_ns_ = 0, rttvar_ns_ = 0, rto_ns_, min_rtt_ns_ = 0;
  uint64_t last_progress_ns_ = 0;
  uint64_t last_probe_ns_ = 0;
  uint64_t last_timer_rtx_ns_ = 0;  // the newest probe or RTO
  // Learned from spurious timeouts: how long this path may go quiet
  // without a loss (the peer's worker off its core); decays per round.
  uint64_t quiet_floor_ns_ = 0;
  bool timers_ok_ = true;
  // RACK: the newest delivered transmission, by transmission order (a
  // whole burst shares one timestamp, and retransmissions leave out of
  // sequence order), and its RTT.
  uint64_t tx_order_ = 0;
  uint64_t rack_order_ = 0;
  uint64_t rack_rtt_ns_ = 0;
  uint64_t reorder_deadline_ = 0;  // 0: no packet waits for its allowance
  uint32_t sack_end_ = 0;          // one past what the newest ACK reports on
  // A round ends when everything sent at its start is acknowledged.
  uint32_t round_end_ = 0;
  uint32_t round_lost_ = 0, round_delivered_ = 0;
  SenderStats stats_;
};

}  // namespace mm::transport
