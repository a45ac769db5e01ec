// A session's parts on several workers (dataplane/engine/SessionShare.hpp,
// Session): which worker owns which stream, how the home part coordinates
// the others (failure, liveness, the hand-over of a QEMU channel), the
// per-stream peer ports and the pacer's retune. The workers' task rings are
// replaced by a queue the test drains (Posts); the e2e test
// e2e_multifd4_two_workers runs the same parts on real workers.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <string>

#include "FakeLink.hpp"
#include "dataplane/engine/Session.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/transport/TokenBucket.hpp"

using namespace mm;
using engine::Role;
using engine::Session;
using engine::SessionParams;
using engine::SessionShare;
using engine::SessionState;

namespace {

constexpr uint64_t kSec = 1'000'000'000;

// Delivers posted tasks to the part on the named worker, as Engine::post does.
struct Posts final : engine::PartLink {
  struct Item {
    uint16_t worker;
    const SessionShare* share;
    std::function<void(Session&, uint64_t)> fn;
    std::function<void()> if_gone;
  };
  void post(uint16_t worker, const SessionShare* share, std::function<void(Session&, uint64_t)> fn,
            std::function<void()> if_gone) override {
    q.push_back({worker, share, std::move(fn), std::move(if_gone)});
  }
  size_t run(uint64_t now) {
    size_t n = 0;
    while (!q.empty()) {
      Item it = std::move(q.front());
      q.pop_front();
      auto p = parts.find(it.worker);
      if (p != parts.end() && p->second->share() == it.share) {
        it.fn(*p->second, now);
      } else if (it.if_gone) {
        it.if_gone();
      }
      ++n;
    }
    return n;
  }
  std::map<uint16_t, Session*> parts;
  std::deque<Item> q;
};

transport::TransportConfig config() {
  transport::TransportConfig c;
  c.dead_timeout_ns = kSec;
  return c;
}

SessionParams destination(uint32_t id) {
  SessionParams p;
  p.id = id;
  p.role = Role::destination;
  p.qemu_uri = "unix:/tmp/mm-parts-test-" + std::to_string(::getpid()) + "-in.sock";
  p.peer_udp_port = 7470;
  p.peer_queues = 2;
  return p;
}

void probe(Session& s, uint16_t stream, uint64_t now) {
  wire::Header h;
  h.type = wire::PacketType::probe;
  h.session = s.id();
  h.stream = stream;
  uint8_t body[wire::kProbeSize] = {};
  transport::PeerAddress from{};
  from.ip = 0x0a000001;
  s.on_packet(h, body, from, now);
}

}  // namespace

TEST(SessionShare, StreamsFollowRoundTheWorkersFromTheHome) {
  const SessionShare spread(7, 3, true);
  EXPECT_EQ(spread.home(), 1);
  for (uint16_t s = 0; s < Session::kStreams; ++s) EXPECT_EQ(spread.owner(s), (7 + s) % 3) << s;
  const SessionShare kept(7, 3, false);
  for (uint16_t s = 0; s < Session::kStreams; ++s) EXPECT_EQ(kept.owner(s), 1) << s;
  const SessionShare one(7, 1, true);
  EXPECT_FALSE(one.spread());
  EXPECT_EQ(one.owner(5), 0);
  EXPECT_EQ(wire::stream_queue(7, 0, 3), 7 % 3);
}

TEST(SessionShare, OnlyASourceWithTheUnchangedFilterKeepsItsStreamsTogether) {
  SessionParams p;
  p.role = Role::source;
  p.pages.unchanged = false;
  EXPECT_TRUE(engine::spreads(p));
  p.pages.unchanged = true;
  EXPECT_FALSE(engine::spreads(p));
  p.role = Role::destination;
  EXPECT_TRUE(engine::spreads(p));
}

TEST(Connection, EachStreamGoesToThePeerWorkerThatOwnsIt) {
  transport::Connection c(config(), 7, Session::kStreams, 1 << 16, 0);
  transport::PeerAddress base{};
  base.udp_port = 7470;
  c.set_peer(base);
  EXPECT_EQ(c.peer_of(3).udp_port, 7470);  // one queue: one port
  c.set_peer_queues(3);
  for (uint16_t s = 0; s < Session::kStreams; ++s) {
    EXPECT_EQ(c.peer_of(s).udp_port, 7470 + (7 + s) % 3) << s;
  }
  EXPECT_EQ(c.peer().udp_port, 7470);
}

TEST(Connection, ProbesTravelOnTheControlStream) {
  test::FakeLink link({});
  transport::TransportConfig cfg = config();
  transport::Connection c(cfg, 7, 4, 1 << 16, 0);
  c.set_peer(link.end(1).local_address());
  c.set_control_stream(3);
  c.flush(cfg.keepalive_ns + 1, link.end(0));
  link.advance(1'000'000);
  std::array<transport::RxDatagram, 8> rx;
  const uint16_t n = link.end(1).rx_burst(rx);
  ASSERT_EQ(n, 1u);
  wire::Header h;
  std::span<const uint8_t> payload;
  ASSERT_EQ(wire::decode_packet({rx[0].data, rx[0].len}, h, payload), wire::DecodeError::ok);
  EXPECT_EQ(h.type, wire::PacketType::probe);
  EXPECT_EQ(h.stream, 3);
}

TEST(TokenBucket, RetuneKeepsWhatWasSavedUpToTheNewBurst) {
  transport::TokenBucket b(100'000'000);  // burst 1 MB
  b.available(0);
  b.consume(600'000);
  EXPECT_EQ(b.available(0), 400'000u);
  b.retune(50'000'000);  // burst 500 kB: the 400 kB stay
  EXPECT_EQ(b.available(0), 400'000u);
  b.retune(10'000'000);  // burst 100 kB
  EXPECT_EQ(b.available(0), 100'000u);
  EXPECT_EQ(b.rate(), 10'000'000u);
}

TEST(SessionParts, AFailureOfTheHomeEndsEveryPart) {
  Posts posts;
  auto share = std::make_shared<SessionShare>(7, 2, true);
  Session home(destination(7), config(), 0, nullptr, share, 1, &posts);
  Session other(destination(7), config(), 0, nullptr, share, 0, &posts);
  posts.parts = {{1, &home}, {0, &other}};
  ASSERT_TRUE(home.home());
  ASSERT_FALSE(other.home());
  EXPECT_TRUE(other.owns(1));
  EXPECT_FALSE(other.owns(0));
  home.cancel(10, "cancelled by the operator");
  EXPECT_EQ(other.state(), SessionState::prepared);  // not before its worker runs the task
  EXPECT_EQ(posts.run(20), 1u);
  EXPECT_EQ(other.state(), SessionState::cancelled);
  EXPECT_EQ(other.info().error, "cancelled by the operator");
  EXPECT_FALSE(other.take_state_change());  // only the home publishes
}

TEST(SessionParts, AFailureOfAnotherPartFailsTheSessionAtTheHome) {
  Posts posts;
  auto share = std::make_shared<SessionShare>(7, 2, true);
  Session home(destination(7), config(), 0, nullptr, share, 1, &posts);
  Session other(destination(7), config(), 0, nullptr, share, 0, &posts);
  posts.parts = {{1, &home}, {0, &other}};
  wire::Header h;
  h.type = wire::PacketType::probe;
  h.session = 7;
  h.stream = 1;
  transport::PeerAddress from{};
  uint8_t short_body[3] = {};
  other.on_packet(h, short_body, from, 5);  // a PROBE with a wrong payload: a protocol error
  EXPECT_EQ(other.state(), SessionState::failed);
  EXPECT_EQ(home.state(), SessionState::prepared);
  posts.run(6);
  EXPECT_EQ(home.state(), SessionState::failed);
  EXPECT_NE(home.info().error.find("worker 0: protocol error from peer"), std::string::npos) << home.info().error;
  // The home then tells every part; the failed one stays as it was.
  posts.run(7);
  EXPECT_EQ(other.state(), SessionState::failed);
}

TEST(SessionParts, ThePeerIsAliveWhileAnyPartHearsFromIt) {
  Posts posts;
  test::FakeLink link({});
  auto share = std::make_shared<SessionShare>(7, 2, true);
  Session home(destination(7), config(), 0, nullptr, share, 1, &posts);
  Session other(destination(7), config(), 0, nullptr, share, 0, &posts);
  posts.parts = {{1, &home}, {0, &other}};
  probe(other, 1, kSec * 8 / 10);  // only the other part hears the peer
  other.poll(kSec * 12 / 10, link.end(0));
  home.poll(kSec * 12 / 10, link.end(0));
  EXPECT_EQ(home.state(), SessionState::prepared) << home.info().error;
  other.poll(2 * kSec, link.end(0));
  home.poll(2 * kSec, link.end(0));
  EXPECT_EQ(home.state(), SessionState::failed);
  EXPECT_NE(home.info().error.find("no packet from the peer"), std::string::npos) << home.info().error;
  posts.run(2 * kSec);
  EXPECT_EQ(other.state(), SessionState::failed);
}

TEST(SessionParts, TheHomeHandsAMultifdChannelToTheWorkerThatOwnsIt) {
  Posts posts;
  test::FakeLink link({});
  auto share = std::make_shared<SessionShare>(7, 2, true);
  SessionParams p;
  p.id = 7;
  p.role = Role::source;
  const std::string path = "/tmp/mm-parts-test-" + std::to_string(::getpid()) + ".sock";
  p.qemu_uri = "unix:" + path;
  p.peer = link.end(1).local_address();
  p.pages.codec = pages::CodecKind::raw;
  p.pages.auto_codec = false;
  Session home(p, config(), 0, nullptr, share, 1, &posts);
  Session other(p, config(), 0, nullptr, share, 0, &posts);
  posts.parts = {{1, &home}, {0, &other}};

  // QEMU's multifd channel 0 is stream 1: worker (7 + 1) % 2 = 0.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::array<uint8_t, qemu::kMultifdInitSize> init{};
  qemu::MultifdInit mi;
  mi.id = 0;
  qemu::encode_multifd_init(mi, std::span<uint8_t, qemu::kMultifdInitSize>(init));
  ASSERT_EQ(::write(fd, init.data(), init.size()), ssize_t(init.size()));

  for (int i = 0; i < 50 && posts.q.empty(); ++i) {
    home.poll(1000 + i, link.end(0));
    ::usleep(1000);
  }
  ASSERT_EQ(posts.q.size(), 1u);
  EXPECT_EQ(posts.q.front().worker, 0);
  EXPECT_EQ(home.info().counters.multifd_channels, 0u);
  posts.run(2000);
  EXPECT_EQ(other.info().counters.multifd_channels, 1u);
  EXPECT_EQ(share->multifd_channels.load(), 1u);
  // The owner reads it: the init goes out on stream 1 as the channel's first message.
  other.poll(3000, link.end(0));
  EXPECT_GT(other.info().counters.qemu_bytes_in, 0u);
  EXPECT_EQ(home.info().counters.qemu_bytes_in, 0u);
  ::close(fd);
}

TEST(SessionInfo, MergeAddsTheOtherPartsCounters) {
  engine::SessionInfo a, b;
  a.counters.qemu_bytes_in = 10;
  a.counters.pages.pages = 3;
  a.parts = {{1, 2, 3}};
  b.home = false;
  b.counters.qemu_bytes_in = 5;
  b.counters.pages.pages = 4;
  b.counters.multifd_channels = 2;
  b.parts = {{0, 2, 4}};
  b.error = "worker 0: broke";
  a.merge(b);
  EXPECT_EQ(a.counters.qemu_bytes_in, 15u);
  EXPECT_EQ(a.counters.pages.pages, 7u);
  EXPECT_EQ(a.counters.multifd_channels, 2u);
  ASSERT_EQ(a.parts.size(), 2u);
  EXPECT_EQ(a.parts[1].worker, 0);
  EXPECT_EQ(a.error, "worker 0: broke");
}
