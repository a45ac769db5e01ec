// Observes QEMU 7.2's return path (destination QEMU -> source QEMU, on
// the main channel's socket backwards; QEMU-7.2-STREAM.md §3) as the
// destination daemon carries it, and reports the page requests in it:
// REQ_PAGES_ID (be64 start, be32 len, u8 idlen, RAM block name) and
// REQ_PAGES (be64 start, be32 len; the block of the previous request).
// Every message is `be16 type, be16 len, data`; SHUT, PONG and
// RESUME_ACK are read past. RECV_BITMAP (postcopy recovery) is followed
// by a bitmap outside any message, so parsing stops there, as at any
// message QEMU 7.2 does not define or a length it would refuse. It never
// changes or holds back a byte and never buffers more than one message.
// Pure code: no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace mm::qemu {

class ReturnPathObserver {
 public:
  struct Sink {
    virtual ~Sink() = default;
    // A page request: `len` bytes from byte offset `start` of `block`.
    virtual void on_request(std::string_view block, uint64_t start, uint32_t len) = 0;
  };

  // QEMU 7.2's message types (migration/migration.c, mig_rp_message_type).
  enum Type : uint16_t { kShut = 1, kPong = 2, kReqPagesId = 3, kReqPages = 4, kRecvBitmap = 5, kResumeAck = 6 };
  // QEMU 7.2's return-path reader refuses longer messages.
  static constexpr uint16_t kMaxMessage = 512;

  explicit ReturnPathObserver(Sink& sink) : sink_(sink) {}

  // The next bytes QEMU wrote, split anywhere.
  void feed(std::span<const uint8_t> bytes);

  bool opaque() const { return opaque_; }
  const std::string& opaque_reason() const { return why_; }
  uint64_t requests() const { return requests_; }
  uint64_t messages() const { return messages_; }

 private:
  void on_message();
  void go_opaque(std::string why);

  Sink& sink_;
  uint8_t buf_[4 + kMaxMessage] = {};
  size_t have_ = 0;
  size_t want_ = 4;  // the header first
  std::string block_;
  bool have_block_ = false;
  bool opaque_ = false;
  std::string why_;
  uint64_t requests_ = 0, messages_ = 0;
};

}  // namespace mm::qemu
