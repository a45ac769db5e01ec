// Relays one QEMU migration connection (the main channel with its return
// path, or a multifd channel) over one MMP stream, byte-exact in both
// directions: QEMU's bytes go out as BYTES records read straight into
// packet slots; records arriving from the peer are written to QEMU; EOF
// travels as a FIN record.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/qemu/UnixSocket.hpp"
#include "dataplane/transport/StreamReceiver.hpp"
#include "dataplane/transport/StreamSender.hpp"

namespace mm::qemu {

class ChannelRelay {
 public:
  // out_capacity bounds what is buffered toward a slow QEMU; it must hold
  // the largest message the peer may send.
  explicit ChannelRelay(size_t out_capacity) : out_capacity_(out_capacity) {}

  void attach(int fd) { chan_ = std::make_unique<ByteChannel>(fd, out_capacity_); }
  bool attached() const { return chan_ != nullptr; }

  // QEMU -> stream: reads as much as free packet slots hold; on EOF queues a
  // FIN record. Returns bytes read (0 when there was nothing to do).
  size_t pump_in(transport::StreamSender& tx);
  // Stream -> QEMU: delivers complete messages while QEMU takes the bytes.
  // Returns false on a broken record stream or socket error (see error()).
  bool pump_out(transport::StreamReceiver& rx);

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
  std::unique_ptr<ByteChannel> chan_;
  bool local_fin_ = false;
  bool remote_fin_ = false;
  bool shut_wr_ = false;
  std::string error_;
};

}  // namespace mm::qemu
