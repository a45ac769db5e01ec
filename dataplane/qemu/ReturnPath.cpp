#include "dataplane/qemu/ReturnPath.hpp"

#include <algorithm>
#include <cstring>

#include "dataplane/wire/Mmp.hpp"

namespace mm::qemu {

using wire::get_be16;
using wire::get_be32;
using wire::get_be64;

void ReturnPathObserver::go_opaque(std::string why) {
  if (opaque_) return;
  opaque_ = true;
  why_ = std::move(why);
}

void ReturnPathObserver::feed(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  const uint8_t* end = p + bytes.size();
  while (p < end && !opaque_) {
    const size_t n = std::min<size_t>(want_ - have_, size_t(end - p));
    std::memcpy(buf_ + have_, p, n);
    have_ += n;
    p += n;
    if (have_ < want_) return;
    if (want_ == 4) {
      const uint16_t len = get_be16(buf_ + 2);
      if (len > kMaxMessage) {
        go_opaque("return-path message of " + std::to_string(len) + " bytes");
        return;
      }
      want_ = 4 + size_t(len);
      if (len > 0) continue;
    }
    on_message();
    have_ = 0;
    want_ = 4;
  }
}

void ReturnPathObserver::on_message() {
  ++messages_;
  const uint16_t type = get_be16(buf_);
  const size_t len = want_ - 4;
  const uint8_t* d = buf_ + 4;
  switch (type) {
    case kShut:
    case kPong:
    case kResumeAck:
      if (len != 4) go_opaque("return-path message " + std::to_string(type) + " of " + std::to_string(len) + " bytes");
      return;
    case kReqPagesId: {
      if (len < 13 || len != 13 + size_t(d[12]) || d[12] == 0) {
        go_opaque("REQ_PAGES_ID of " + std::to_string(len) + " bytes");
        return;
      }
      block_.assign(reinterpret_cast<const char*>(d + 13), d[12]);
      have_block_ = true;
      break;
    }
    case kReqPages:
      if (len != 12) {
        go_opaque("REQ_PAGES of " + std::to_string(len) + " bytes");
        return;
      }
      if (!have_block_) {
        go_opaque("REQ_PAGES before any block was named");
        return;
      }
      break;
    case kRecvBitmap: go_opaque("RECV_BITMAP (postcopy recovery): its bitmap is outside the message"); return;
    default: go_opaque("return-path message type " + std::to_string(type)); return;
  }
  ++requests_;
  sink_.on_request(block_, get_be64(d), get_be32(d + 8));
}

}  // namespace mm::qemu
