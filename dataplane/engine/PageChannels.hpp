// Page-aware multifd channels: the source daemon's reader of a
// QEMU multifd channel (MultifdSource: MultiFDInit, then packets split into
// page records by the PageEncoder) and the destination daemon's rebuilder
// (MultifdRebuilder: page messages checked by the PageDecoder and turned
// back into QEMU 7.2 multifd packets). Codecs live per worker (CodecSet).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/qemu/ChannelRelay.hpp"
#include "dataplane/qemu/StreamFormat.hpp"
#include "dataplane/transport/MessageStream.hpp"

namespace mm::engine {

// The codecs of one worker, created on first use. DEFLATE needs the
// compressdev the NIC profile names ([offload] compressdev); each worker
// uses its own queue pair of it (its index).
class CodecSet {
 public:
  explicit CodecSet(std::string compressdev, uint16_t queue_pair = 0)
      : compressdev_(std::move(compressdev)), queue_pair_(queue_pair) {}
  ~CodecSet();
  // nullptr for raw; nullptr with *why set when the codec is unavailable.
  pages::PageCodec* get(pages::CodecKind k, std::string* why);
  const std::string& compressdev() const { return compressdev_; }

 private:
  std::string compressdev_;
  uint16_t queue_pair_;
  std::unique_ptr<pages::PageCodec> lz4_, zstd_, deflate_;
  std::string deflate_error_;
};

class MultifdSource {
 public:
  // Decides whether PAGE_SAME is safe for a packet of this epoch (Session:
  // the main channel and every multifd channel are past the earlier ones),
  // and which channels the filter orders (MULTIFD_BEGIN's `channels`).
  struct SkipGate {
    bool skip = false;
    uint8_t channels = 0;
  };
  using Gate = std::function<SkipGate(uint32_t epoch)>;
  // heavy: with the policy's auto codec, the codec for packets of a flow
  // the link holds back (zstd); codec is then the one for a flow the CPU
  // holds back.
  // format: how the QEMU on this channel lays out its stream.
  MultifdSource(uint16_t channel, const pages::PagePolicy& policy, pages::PageCodec* codec,
                pages::UnchangedFilter* filter, size_t max_message, pages::PageCodec* heavy = nullptr,
                const qemu::StreamFormat& format = qemu::qemu_7_2());

  // Reads QEMU's bytes from relay's channel, and queues page messages (or
  // BYTES, see passthrough()) on tx. Returns whether it did work; false and
  // error() set on a stream that is not valid multifd.
  // ahead: packets that may be unacknowledged before it takes another
  // QEMU packet (the session's read-ahead budget).
  bool pump(qemu::ChannelRelay& relay, transport::MessageSender& tx, const Gate& gate, bool& work,
            uint32_t ahead = UINT32_MAX);

  uint32_t epoch() const { return syncs_; }
  // QEMU compresses multifd itself (multifd-compression zlib/zstd): its
  // packets are relayed byte-exact from then on.
  bool passthrough() const { return step_ == Step::passthrough; }
  const std::string& error() const { return error_; }
  const pages::PageStats& stats() const { return encoder_.stats(); }
  // Logs every page sent into the flow's capture for the page store.
  void set_capture(store::Capture* c) { encoder_.set_capture(c); }
  void set_table(const store::PageTable* t) { encoder_.set_table(t); }
  // This host's own image of the VM, for deltas against the destination's.
  void set_base_image(std::shared_ptr<const store::Image> img) { encoder_.set_base_image(std::move(img)); }

 private:
  enum class Step { init, packets, passthrough };
  enum class Parsed { error, need_input, no_room, queued };
  // Turns buffered bytes into the next message, if a whole unit is there,
  // written straight into tx's free packet slots (queued); no_room: fewer
  // free slots than the message may take.
  Parsed parse(const Gate& gate, transport::MessageSender& tx);
  // A writer for a message of at most `bound` bytes over the free slots
  // from tx.reserve() on: one buffer when they lie back to back (a heap
  // window), else the list of them (a window of NIC buffers: records
  // straddle slots as they straddle packets). False: no room.
  bool message_writer(transport::MessageSender& tx, size_t bound, wire::RecordWriter& w);
  // Queues a message written by message_writer(): commits its slots with
  // the framing submit_message() would give.
  Parsed finish_message(transport::MessageSender& tx, size_t len);
  Parsed bytes_message(transport::MessageSender& tx, size_t n);
  // The auto codec's choice for the next packet, from the share of recent
  // packets taken while earlier ones still waited to be transmitted.
  void choose_codec();
  void consume(size_t n);
  // Makes room for `n` contiguous unconsumed bytes from the read cursor:
  // moves the unconsumed tail to the front only when it must.
  void make_room(size_t n);
  bool fail(const std::string& why) {
    error_ = "multifd channel " + std::to_string(channel_) + ": " + why;
    return false;
  }

  const qemu::StreamFormat& format_;
  uint16_t channel_;
  size_t max_message_;
  pages::PageEncoder encoder_;
  pages::PageCodec* light_;  // auto codec: for a CPU-bound flow (the policy's codec)
  pages::PageCodec* heavy_;  // ... for a link-bound one (zstd); nullptr: no auto codec
  bool heavy_on_ = false;
  static constexpr uint32_t kHeldOne = 1 << 16;  // fixed point 1.0 of held_
  uint32_t held_ = 0;        // moving share of packets taken while the link held earlier ones
  uint32_t entry_unsent_ = 0;  // tx.unsent() when this pump() began
  Step step_ = Step::init;
  std::vector<uint8_t> in_;  // QEMU bytes; [in_head_, in_head_ + in_len_) not consumed yet
  size_t in_head_ = 0, in_len_ = 0;
  std::unique_ptr<uint64_t[]> offsets_;  // the current packet's offsets
  // The free slots a message is written across (a window of NIC buffers):
  // the largest message over the smallest payload a profile may have.
  static constexpr size_t kMaxMessageSlots = 1024;
  std::array<std::span<uint8_t>, kMaxMessageSlots> slots_{};
  std::array<uint32_t, kMaxMessageSlots> lens_{};
  bool eof_ = false;
  uint32_t syncs_ = 0;
  std::string error_;
};

class MultifdRebuilder {
 public:
  // format: how the destination QEMU expects its multifd packets.
  explicit MultifdRebuilder(CodecSet* codecs, const qemu::StreamFormat& format = qemu::qemu_7_2());
  // Stream -> QEMU for one multifd stream: takes the complete messages
  // from rx while QEMU has room, rebuilds each page message into a QEMU
  // packet written to relay's channel, and hands the others (the init's
  // BYTES, FIN) to the relay. False (error() set) on a message that is
  // refused -- nothing of it reaches QEMU -- or a broken channel.
  // gate(channels, epoch): whether a page message of this stream's epoch
  // whose MULTIFD_BEGIN names `channels` may be decoded now (else it waits
  // in rx); none: always.
  using Gate = std::function<bool(uint8_t channels, uint32_t epoch)>;
  bool pump(transport::MessageReceiver& rx, qemu::ChannelRelay& relay, const Gate& gate = {});
  // The stream's epoch: the SYNC packets it rebuilt so far.
  uint32_t epoch() const { return uint32_t(decoder_.stats().sync_packets); }
  // The session's record of what it delivered, for PAGE_SAME checks.
  void set_delivered(pages::DeliveredTable* t) { decoder_.set_delivered(t); }
  // The rebuilt packet as parts: its header (rebuilt here), then its
  // pages where the decoder left them (see DecodedPacket::page_at);
  // empty when there is nothing to write. Returns why the message is
  // refused, or the empty string.
  std::string rebuild(std::span<const uint8_t> message, std::span<const std::span<const uint8_t>>& parts);
  const std::string& error() const { return error_; }
  const pages::PageStats& stats() const { return decoder_.stats(); }
  // This host's image of the VM, for PAGE_STORED pages.
  void set_image(std::shared_ptr<const store::Image> img) { decoder_.set_image(std::move(img)); }
  // Logs every page written to QEMU into the flow's capture (nullptr: none).
  void set_capture(store::Capture* c) { decoder_.set_capture(c); }
  // Rebuilt packets written so far; whether BYTES went to QEMU beyond the
  // channel's init (a channel QEMU compressed itself: no pages seen).
  uint64_t packets() const { return packets_; }
  bool passthrough() const { return bytes_messages_ > 1; }
  // Packets without pages and without SYNC, not written to QEMU.
  uint64_t dropped_empty() const { return dropped_empty_; }

  // After the session failed: an empty SYNC packet that lets a destination
  // QEMU parked at a sync point read on to the main channel's end
  // (QEMU-7.2-STREAM.md, "A channel that ends at a sync point"). Empty
  // when the channel is not at a packet boundary that QEMU would read it
  // at: before its init was taken in full, or after bytes that were not a
  // rebuilt packet (a packet QEMU compressed itself).
  std::span<const uint8_t> release_packet(const qemu::ChannelRelay& relay);

 private:
  const qemu::StreamFormat& format_;
  // Where the channel toward QEMU stands, for release_packet().
  bool after_bytes_ = false;     // the last thing written was not a rebuilt packet
  uint64_t packets_ = 0;         // rebuilt packets written
  // The last two rebuilt packets written (0: newest): what release_packet()
  // follows, and what QEMU had last been given when a write to it failed.
  struct Written {
    uint64_t packet_num = 0;
    uint32_t flags = 0, pages = 0, pages_alloc = 0;
  };
  Written written_[2];
  uint64_t since_sync_ = 0;  // packets written after the last SYNC
  uint64_t bytes_messages_ = 0;  // messages that gave QEMU bytes (the init, or a relayed stream)
  std::string describe_written() const;
  pages::PageDecoder decoder_;
  pages::DecodedPacket packet_;
  std::unique_ptr<uint8_t[]> header_;            // the largest header QEMU 7.2 reads
  std::vector<std::span<const uint8_t>> parts_;  // header + runs of adjacent pages
  uint64_t dropped_empty_ = 0;
  std::string error_;
};

}  // namespace mm::engine
