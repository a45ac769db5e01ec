// Relays one QEMU migration connection (the main channel with its return
// path, or a multifd channel) over one MMP stream, byte-exact in both
// directions: QEMU's bytes go out as BYTES records read straight into
// packet slots; records arriving from the peer are written to QEMU; EOF
// travels as a FIN record.
//
// A destination multifd stream also carries page messages (MULTIFD_BEGIN ..
// MULTIFD_END, MMP.md "Page records"): the relay hands each to its
// PageMessageHandler, which checks it whole and rebuilds the QEMU multifd
// packet that is then written to QEMU. A source multifd channel is read by
// the engine's MultifdSource instead of pump_in() (it needs the packets).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/qemu/UnixSocket.hpp"
#include "dataplane/transport/MessageStream.hpp"

namespace mm::qemu {

class PageMessageHandler {
 public:
  virtual ~PageMessageHandler() = default;
  // Rebuilds the QEMU bytes of one page message as `parts` to be written
  // in order (empty: nothing to write): views of the handler's own buffers,
  // of the message itself and of its dictionary, valid until the next call
  // and while the message is. Returns the empty string, or why the message
  // is refused -- then nothing of it reaches QEMU.
  virtual std::string rebuild(std::span<const uint8_t> message,
                              std::span<const std::span<const uint8_t>>& parts) = 0;
  // The most bytes a message announcing pages_alloc page slots rebuilds
  // into (header and pages); 0 when the destination QEMU's format has no
  // packet of that size.
  virtual size_t rebuilt_bound(uint32_t pages_alloc) const = 0;
};


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

  // Destination multifd streams: who rebuilds page messages (not owned).
  void set_page_handler(PageMessageHandler* h) { pages_ = h; }
  // Sees every byte read from QEMU by pump_in(), in order (the source's
  // main-channel observer).
  void set_tap(std::function<void(std::span<const uint8_t>)> tap) { tap_ = std::move(tap); }
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

  bool local_fin_queued() const { return local_fin_; }
  bool remote_fin_seen() const { return remote_fin_; }
  // Both directions ended and everything was written to QEMU.
  bool finished() const { return local_fin_ && remote_fin_ && (!chan_ || chan_->out_empty()); }
  void close() {
    if (chan_) chan_->close();
  }

  uint64_t bytes_from_qemu() const { return chan_ ? chan_->bytes_in() : 0; }
  uint64_t bytes_to_qemu() const { return chan_ ? chan_->bytes_out() : 0; }
  const std::string& error() const { return error_; }

 private:
  size_t out_capacity_;
  // False with error_ set on a refused message, without it when QEMU
  // cannot take the rebuilt packet yet.
  bool deliver_pages(std::span<const uint8_t> message);

  std::unique_ptr<ByteChannel> chan_;
  PageMessageHandler* pages_ = nullptr;
  std::function<void(std::span<const uint8_t>)> tap_;
  bool local_fin_ = false;
  bool remote_fin_ = false;
  bool shut_wr_ = false;
  std::string error_;
};

}  // namespace mm::qemu
