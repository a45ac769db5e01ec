// Proves the return-path observer finds QEMU 7.2's page requests however
// the bytes are split, reads past the messages it does not time, and stops
// (with a reason, never a wrong request) at what it cannot read.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/qemu/ReturnPath.hpp"

using mm::qemu::ReturnPathObserver;

namespace {

struct Requests : ReturnPathObserver::Sink {
  std::vector<std::string> log;
  void on_request(std::string_view b, uint64_t start, uint32_t len) override {
    log.push_back(std::string(b) + " " + std::to_string(start) + " " + std::to_string(len));
  }
};

struct Msg {
  std::vector<uint8_t> b;
  Msg& u8(uint8_t v) { b.push_back(v); return *this; }
  Msg& be16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Msg& be32(uint32_t v) { return be16(uint16_t(v >> 16)).be16(uint16_t(v)); }
  Msg& be64(uint64_t v) { return be32(uint32_t(v >> 32)).be32(uint32_t(v)); }
  Msg& req_id(uint64_t start, uint32_t len, const std::string& id) {
    be16(ReturnPathObserver::kReqPagesId).be16(uint16_t(13 + id.size())).be64(start).be32(len).u8(uint8_t(id.size()));
    b.insert(b.end(), id.begin(), id.end());
    return *this;
  }
  Msg& req(uint64_t start, uint32_t len) { return be16(ReturnPathObserver::kReqPages).be16(12).be64(start).be32(len); }
  Msg& pong(uint32_t seq) { return be16(ReturnPathObserver::kPong).be16(4).be32(seq); }
};

}  // namespace

TEST(ReturnPath, FindsPageRequestsHoweverTheBytesAreSplit) {
  Msg m;
  m.pong(1).req_id(0x5000, 4096, "pc.ram").req(0x9000, 4096).pong(2).req_id(0x1000, 8192, "vga.vram").req(0, 4096);
  const std::vector<std::string> want = {"pc.ram 20480 4096", "pc.ram 36864 4096", "vga.vram 4096 8192", "vga.vram 0 4096"};
  for (size_t piece : {m.b.size(), size_t(1), size_t(5), size_t(13)}) {
    Requests r;
    ReturnPathObserver o(r);
    for (size_t at = 0; at < m.b.size(); at += piece) o.feed({m.b.data() + at, std::min(piece, m.b.size() - at)});
    EXPECT_EQ(r.log, want) << "pieces of " << piece;
    EXPECT_FALSE(o.opaque());
    EXPECT_EQ(o.requests(), 4u);
    EXPECT_EQ(o.messages(), 6u);
  }
}

TEST(ReturnPath, StopsWithAReasonAtWhatItCannotRead) {
  struct Case {
    Msg m;
    const char* why;
  };
  std::vector<Case> cases(5);
  cases[0].m.req(0, 4096);
  cases[0].why = "REQ_PAGES before any block was named";
  cases[1].m.be16(ReturnPathObserver::kReqPages).be16(11).be64(0).be16(0).u8(0);
  cases[1].why = "REQ_PAGES of 11 bytes";
  cases[2].m.be16(ReturnPathObserver::kRecvBitmap).be16(7).u8(6).be32(0).be16(0);
  cases[2].why = "RECV_BITMAP (postcopy recovery): its bitmap is outside the message";
  cases[3].m.be16(9).be16(0);
  cases[3].why = "return-path message type 9";
  cases[4].m.be16(ReturnPathObserver::kPong).be16(ReturnPathObserver::kMaxMessage + 1);
  cases[4].why = "return-path message of 513 bytes";
  for (auto& c : cases) {
    Requests r;
    ReturnPathObserver o(r);
    c.m.req_id(0, 4096, "pc.ram");  // nothing after the stop is reported
    o.feed(c.m.b);
    EXPECT_TRUE(o.opaque());
    EXPECT_EQ(o.opaque_reason(), c.why);
    EXPECT_TRUE(r.log.empty());
  }
}
