// Relays one QEMU migration connection (the main channel with its return
// path, or a multifd channel) over one MMP stream, byte-exact in both
// directions: QEMU's bytes go out as BYTES records read straight into
// packet slots; records arriving from the peer are written to QEMU; EOF
// travels as a FIN record.
//
// A multifd stream's page messages (MULTIFD_BEGIN .. MULTIFD_END, MMP.md
// "Page records") are the engine's: at the destination its
// MultifdRebuilder takes them from the stream, rebuilds QEMU's packets and
// writes them here (write_packet), and hands everything else to
// write_records(); at the source its MultifdSource reads the channel
// instead of pump_in(). The page path thus flows one way on each side:
// QEMU -> engine -> stream, stream -> engine -> QEMU.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/qemu/UnixSocket.hpp"
#include "dataplane/transport/MessageStream.hpp"

namespace mm::qemu {

class ChannelRelay {
 public:
  // out_capacity bounds what is buffered toward a slow QEMU; it must hold
  // the largest message the peer may send, and on a multifd stream the
  // largest rebuilt packet (kRebuiltMax). 0 for a channel nothing is
  // written to (a source's multifd channel): bytes for it are an error.
  explicit ChannelRelay(size_t out_capacity) : out_capacity_(out_capacity) {}

  void attach(int fd) { chan_ = std::make_unique<ByteChannel>(fd, out_capacity_); }
  bool attached() const { return chan_ != nullptr; }
  ByteChannel* channel() { return chan_.get(); }

  // Sees every byte read from QEMU by pump_in(), in order (the source's
  // main-channel observer).
  void set_tap(std::function<void(std::span<const uint8_t>)> tap) { tap_ = std::move(tap); }
  // Sees every byte of BYTES records given to QEMU by write_records(), in
  // order (the destination's main-channel observer).
  void set_out_tap(std::function<void(std::span<const uint8_t>)> tap) { out_tap_ = std::move(tap); }
  // Stream -> QEMU: STORE_TABLE records are handed to `sink` (which returns
  // "" or why the chunk is refused); without a sink they are refused.
  void set_table_sink(std::function<std::string(std::span<const uint8_t>)> sink) { table_sink_ = std::move(sink); }
  // QEMU's side ended: queues the stream's FIN record (pump_in() does this
  // itself; another reader of the channel calls it). False while the
  // stream's window is full: call again later.
  bool send_fin(transport::MessageSender& tx);

  // QEMU -> stream: reads as much as free packet slots hold, keeping at
  // most `ahead` packets unacknowledged; on EOF queues a FIN record.
  // Returns bytes read (0 when there was nothing to do).
  size_t pump_in(transport::MessageSender& tx, uint32_t ahead = UINT32_MAX);
  // Stream -> QEMU: delivers complete messages while QEMU takes the bytes.
  // Returns false on a broken record stream or socket error (see error()).
  bool pump_out(transport::MessageReceiver& rx);
  // One message of BYTES / SYNC / FIN records for QEMU, taken all or
  // nothing: false with error() set when it is malformed (a page message
  // included), without when QEMU cannot take it yet.
  bool write_records(std::span<const uint8_t> message);
  // A rebuilt multifd packet as parts, written in order; the caller checked
  // that out_room() holds it. False (error() set) after FIN.
  bool write_packet(std::span<const std::span<const uint8_t>> parts);
  size_t out_room() const { return chan_ ? chan_->out_room() : 0; }
  // Sends what is buffered for QEMU; shuts its side once FIN was written.
  bool flush_out();

  bool local_fin_queued() const { return local_fin_; }
  bool remote_fin_seen() const { return remote_fin_; }
  // Both directions ended and everything was written to QEMU.
  bool finished() const { return local_fin_ && remote_fin_ && (!chan_ || chan_->out_empty()); }
  void close() {
    if (chan_) chan_->close();
  }

  uint64_t bytes_from_qemu() const { return chan_ ? chan_->bytes_in() : 0; }
  uint64_t bytes_to_qemu() const { return chan_ ? chan_->bytes_out() : 0; }
  uint64_t bytes_taken_for_qemu() const { return chan_ ? chan_->bytes_taken() : 0; }
  const std::string& error() const { return error_; }

 private:
  size_t out_capacity_;

  std::unique_ptr<ByteChannel> chan_;
  std::function<void(std::span<const uint8_t>)> tap_;
  std::function<void(std::span<const uint8_t>)> out_tap_;
  std::function<std::string(std::span<const uint8_t>)> table_sink_;
  bool local_fin_ = false;
  bool remote_fin_ = false;
  bool shut_wr_ = false;
  std::string error_;
};

}  // namespace mm::qemu
