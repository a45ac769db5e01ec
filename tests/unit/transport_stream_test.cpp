// Proves the reliable stream delivers every message byte-exact and in order
// over a link that loses, reorders and duplicates datagrams; that a slow
// receiver pushes back through credits instead of losing data; and that a
// silent or lying peer is detected.
#include <gtest/gtest.h>

#include <random>

#include "FakeLink.hpp"
#include "dataplane/transport/Connection.hpp"

using namespace mm;
using test::FakeLink;
using test::LinkFaults;
using transport::Connection;

namespace {

transport::TransportConfig test_config(uint32_t max_payload) {
  transport::TransportConfig c;
  c.window = 256;
  c.max_payload = max_payload;
  c.rto_min_ns = 1'000'000;
  c.dead_timeout_ns = 500'000'000;
  return c;
}

// A deterministic stream of messages of varied sizes: the receiver
// regenerates it to check every byte.
class MessageSource {
 public:
  explicit MessageSource(uint32_t seed, size_t max_size) : rng_(seed), max_(max_size) {}
  std::vector<uint8_t> next() {
    std::vector<uint8_t> m(1 + rng_() % max_);
    for (auto& b : m) b = uint8_t(rng_());
    return m;
  }

 private:
  std::mt19937 rng_;
  size_t max_;
};

struct Side {
  Side(const transport::TransportConfig& cfg, FakeLink::End& port, uint64_t now, uint32_t seed_tx,
       uint32_t seed_rx, size_t max_msg)
      : conn(cfg, 77, 1, 1 << 16, now), port(port), tx_src(seed_tx, max_msg), rx_ref(seed_rx, max_msg) {}
  Connection conn;
  FakeLink::End& port;
  MessageSource tx_src, rx_ref;
  std::vector<uint8_t> pending;
  uint64_t sent_msgs = 0, recv_msgs = 0, recv_bytes = 0;
  bool mismatch = false;
  double refuse = 0;  // probability the sink pushes back
};

void receive(Side& s, uint64_t now) {
  std::array<transport::RxDatagram, 32> rx;
  const uint16_t n = s.port.rx_burst(rx);
  for (uint16_t i = 0; i < n; ++i) {
    wire::Header h;
    std::span<const uint8_t> p;
    ASSERT_EQ(wire::decode_packet({rx[i].data, rx[i].len}, h, p), wire::DecodeError::ok);
    ASSERT_TRUE(s.conn.on_packet(h, p, now)) << s.conn.error();
  }
  s.port.rx_release();
}

// Runs both directions until each side got `messages` messages or the
// simulated time runs out.
void run(FakeLink& link, Side& a, Side& b, uint64_t messages, std::mt19937& rng,
         uint64_t max_steps = 2'000'000) {
  Side* sides[2] = {&a, &b};
  for (uint64_t step = 0; step < max_steps; ++step) {
    link.advance(10'000);
    const uint64_t now = link.now();
    for (Side* s : sides) {
      receive(*s, now);
      while (s->sent_msgs < messages) {
        if (s->pending.empty()) s->pending = s->tx_src.next();
        if (!s->conn.sender(0).submit_message(s->pending)) break;
        s->pending.clear();
        ++s->sent_msgs;
      }
      const int d = s->conn.receiver(0).deliver([&](std::span<const uint8_t> m) {
        if (s->refuse > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < s->refuse) return false;
        const auto expect = s->rx_ref.next();
        if (!std::equal(m.begin(), m.end(), expect.begin(), expect.end())) s->mismatch = true;
        ++s->recv_msgs;
        s->recv_bytes += m.size();
        return true;
      });
      ASSERT_GE(d, 0) << s->conn.receiver(0).error();
      s->conn.flush(now, s->port);
    }
    if (a.recv_msgs == messages && b.recv_msgs == messages && a.conn.sender(0).idle() &&
        b.conn.sender(0).idle()) {
      return;
    }
  }
}

struct Pair {
  Pair(LinkFaults f, uint32_t seed, size_t max_msg = 3000)
      : link(f, seed),
        a(test_config(link.end(0).max_datagram() - 32), link.end(0), link.now(), 1, 2, max_msg),
        b(test_config(link.end(1).max_datagram() - 32), link.end(1), link.now(), 2, 1, max_msg) {
    a.conn.set_peer(link.end(1).local_address());
    b.conn.set_peer(link.end(0).local_address());
  }
  FakeLink link;
  Side a, b;
};

}  // namespace

TEST(ReliableStream, CleanLinkDeliversEverythingWithoutRetransmits) {
  Pair p({}, 1);
  std::mt19937 rng(1);
  run(p.link, p.a, p.b, 4000, rng);
  EXPECT_EQ(p.a.recv_msgs, 4000u);
  EXPECT_EQ(p.b.recv_msgs, 4000u);
  EXPECT_FALSE(p.a.mismatch);
  EXPECT_FALSE(p.b.mismatch);
  EXPECT_EQ(p.a.conn.sender(0).stats().retransmits, 0u);
  EXPECT_EQ(p.b.conn.sender(0).stats().retransmits, 0u);
  EXPECT_GT(p.a.recv_bytes, 4000u * 1000);
}

class LossyLink : public ::testing::TestWithParam<LinkFaults> {};

TEST_P(LossyLink, DeliversEveryByteInOrder) {
  Pair p(GetParam(), 7);
  std::mt19937 rng(7);
  run(p.link, p.a, p.b, 3000, rng);
  EXPECT_EQ(p.a.recv_msgs, 3000u);
  EXPECT_EQ(p.b.recv_msgs, 3000u);
  EXPECT_FALSE(p.a.mismatch);
  EXPECT_FALSE(p.b.mismatch);
  EXPECT_GT(p.link.dropped(), 0u);
  const auto& st = p.a.conn.sender(0).stats();
  EXPECT_GT(st.retransmits, 0u);
  EXPECT_GE(st.retransmits, st.fast_retransmits);
}

INSTANTIATE_TEST_SUITE_P(Faults, LossyLink,
                         ::testing::Values(LinkFaults{0.001, 0, 0}, LinkFaults{0.01, 0.02, 0.01},
                                           LinkFaults{0.05, 0.05, 0.02}, LinkFaults{0.15, 0.05, 0.02}));

TEST(ReliableStream, SlowReceiverPushesBackThroughCredits) {
  Pair p({}, 3);
  p.b.refuse = 0.97;  // b's application takes a message only now and then
  std::mt19937 rng(3);
  run(p.link, p.a, p.b, 1500, rng, 5'000'000);
  EXPECT_EQ(p.b.recv_msgs, 1500u);
  EXPECT_FALSE(p.b.mismatch);
  // The sender never overran the window the receiver offered.
  EXPECT_EQ(p.b.conn.receiver(0).stats().out_of_window, 0u);
}

TEST(ReliableStream, TxRingFullIsRetriedNotLost) {
  Pair p({}, 4);
  std::mt19937 rng(4);
  p.link.block(0, true);
  run(p.link, p.a, p.b, 50, rng, 1000);
  EXPECT_EQ(p.b.recv_msgs, 0u);
  p.link.block(0, false);
  run(p.link, p.a, p.b, 50, rng);
  EXPECT_EQ(p.b.recv_msgs, 50u);
  EXPECT_FALSE(p.b.mismatch);
}

TEST(ReliableStream, SilentPeerIsDetectedAfterDeadTimeout) {
  Pair p({}, 5);
  std::mt19937 rng(5);
  run(p.link, p.a, p.b, 10, rng);
  ASSERT_EQ(p.b.recv_msgs, 10u);
  const uint64_t t0 = p.link.now();
  p.link.cut(1);  // b's packets no longer reach a
  const uint64_t dead = test_config(1000).dead_timeout_ns;
  while (p.link.now() - t0 < dead / 2) {
    p.link.advance(10'000'000);
    receive(p.a, p.link.now());
    p.a.conn.flush(p.link.now(), p.a.port);
  }
  EXPECT_FALSE(p.a.conn.peer_silent(p.link.now()));
  while (p.link.now() - t0 < dead + 20'000'000) {
    p.link.advance(10'000'000);
    receive(p.a, p.link.now());
    p.a.conn.flush(p.link.now(), p.a.port);
  }
  EXPECT_TRUE(p.a.conn.peer_silent(p.link.now()));
}

TEST(ReliableStream, KeepalivesKeepAnIdlePeerAlive) {
  Pair p({}, 6);
  // Idle for four dead timeouts: probes and their ACKs must keep both up.
  const uint64_t until = p.link.now() + 4 * test_config(1000).dead_timeout_ns;
  while (p.link.now() < until) {
    p.link.advance(1'000'000);
    for (Side* s : {&p.a, &p.b}) {
      receive(*s, p.link.now());
      s->conn.flush(p.link.now(), s->port);
    }
  }
  EXPECT_FALSE(p.a.conn.peer_silent(p.link.now()));
  EXPECT_FALSE(p.b.conn.peer_silent(p.link.now()));
  EXPECT_GT(p.a.conn.stats().probes_tx, 4u);
  EXPECT_GT(p.b.conn.stats().probes_rx, 4u);
}

TEST(ReliableStream, AckForUnsentPacketsIsRejected) {
  Pair p({}, 8);
  wire::AckPayload ack{100, 0, 10, 0};
  std::array<uint8_t, wire::kAckSize> body;
  wire::encode_ack(ack, body);
  wire::Header h;
  h.type = wire::PacketType::ack;
  h.session = 77;
  EXPECT_FALSE(p.a.conn.on_packet(h, body, p.link.now()));
  EXPECT_EQ(p.a.conn.stats().bad_ack, 1u);
  h.stream = 3;  // the session has one stream
  EXPECT_FALSE(p.a.conn.on_packet(h, body, p.link.now()));
  EXPECT_EQ(p.a.conn.stats().bad_stream, 1u);
}

TEST(ReliableStream, CloseCarriesReasonToThePeer) {
  Pair p({}, 9);
  p.a.conn.close(wire::CloseReason::cancelled, "operator said stop");
  p.a.conn.flush(p.link.now(), p.a.port);
  p.link.advance(100'000);
  receive(p.b, p.link.now());
  EXPECT_TRUE(p.b.conn.peer_closed());
  EXPECT_EQ(p.b.conn.peer_close_reason(), wire::CloseReason::cancelled);
  EXPECT_EQ(p.b.conn.peer_close_text(), "operator said stop");
}

TEST(Pacer, HoldsTheWireRateToMaxBandwidth) {
  Pair p({}, 10);
  constexpr uint64_t kRate = 20'000'000;  // 20 MB/s of wire bytes
  p.a.conn.set_max_bandwidth(kRate);
  std::mt19937 rng(10);
  const uint64_t t0 = p.link.now();
  const uint64_t bytes0 = p.a.conn.stats().wire_bytes_tx;
  run(p.link, p.a, p.b, 20000, rng, 100'000);  // one simulated second
  const double secs = double(p.link.now() - t0) / 1e9;
  const double rate = double(p.a.conn.stats().wire_bytes_tx - bytes0) / secs;
  // Simulated time: the only slack is one burst (64 KiB) and ACK traffic.
  EXPECT_LT(rate, kRate * 1.03);
  EXPECT_GT(rate, kRate * 0.90);
  EXPECT_FALSE(p.b.mismatch);
}

TEST(Pacer, PriorityStreamOvertakesABacklog) {
  FakeLink link({}, 11);
  auto cfg = test_config(link.end(0).max_datagram() - 32);
  Connection a(cfg, 5, 2, 1 << 16, link.now()), b(cfg, 5, 2, 1 << 16, link.now());
  a.set_peer(link.end(1).local_address());
  b.set_peer(link.end(0).local_address());
  a.set_max_bandwidth(10'000'000);  // 10 MB/s: the bulk backlog takes a while
  a.set_priority(1, true);
  std::vector<uint8_t> bulk(1400, 0xAB), urgent(1400, 0x55);
  while (a.sender(0).submit_message(bulk)) {
  }
  int bulk_done = 0, urgent_done = 0;
  uint64_t urgent_at = 0;
  for (int step = 0; step < 20000 && urgent_done == 0; ++step) {
    link.advance(10'000);
    if (step == 100) {
      ASSERT_TRUE(a.sender(1).submit_message(urgent));
      urgent_at = link.now();
    }
    for (auto* c : {&a, &b}) {
      std::array<transport::RxDatagram, 32> rx;
      auto& port = link.end(c == &a ? 0 : 1);
      const uint16_t n = port.rx_burst(rx);
      for (uint16_t i = 0; i < n; ++i) {
        wire::Header h;
        std::span<const uint8_t> pl;
        ASSERT_EQ(wire::decode_packet({rx[i].data, rx[i].len}, h, pl), wire::DecodeError::ok);
        ASSERT_TRUE(c->on_packet(h, pl, link.now()));
      }
      port.rx_release();
      c->flush(link.now(), port);
    }
    b.receiver(0).deliver([&](std::span<const uint8_t>) { return ++bulk_done, true; });
    b.receiver(1).deliver([&](std::span<const uint8_t>) { return ++urgent_done, true; });
  }
  ASSERT_EQ(urgent_done, 1);
  // Delivered within a few milliseconds although ~256 bulk packets (~370 ms
  // at this rate) were queued ahead of it.
  EXPECT_LT(link.now() - urgent_at, 5'000'000u);
  EXPECT_LT(bulk_done, 100);
}
