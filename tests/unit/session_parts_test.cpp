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
#include <memory>
#include <string>

#include "FakeLink.hpp"
#include "dataplane/engine/Session.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/transport/TokenBucket.hpp"
#include "dataplane/wire/Mmp.hpp"

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
  // The preempt stream stays with the home, where its requests' return path is.
  for (uint16_t s = 0; s < Session::kStreams; ++s) {
    EXPECT_EQ(spread.owner(s), s == Session::kPreemptStream ? 1 : (7 + s) % 3) << s;
  }
  const SessionShare kept(7, 3, false);
  for (uint16_t s = 0; s < Session::kStreams; ++s) EXPECT_EQ(kept.owner(s), 1) << s;
  const SessionShare one(7, 1, true);
  EXPECT_FALSE(one.spread());
  EXPECT_EQ(one.owner(5), 0);
  EXPECT_EQ(wire::stream_queue(7, 0, 3), 7 % 3);
}

TEST(SessionShare, TheUnchangedFilterKeepsASessionsStreamsTogetherAtBothEnds) {
  SessionParams p;
  for (Role r : {Role::source, Role::destination}) {
    p.role = r;
    p.pages.unchanged = false;
    EXPECT_TRUE(engine::spreads(p));
    p.pages.unchanged = true;
    EXPECT_FALSE(engine::spreads(p));
  }
}

TEST(Connection, EachStreamGoesToThePeerWorkerThatOwnsIt) {
  transport::Connection c(config(), 7, Session::kStreams, 1 << 16, 0);
  transport::PeerAddress base{};
  base.udp_port = 7470;
  c.set_peer(base);
  EXPECT_EQ(c.peer_of(3).udp_port, 7470);  // one queue: one port
  c.set_peer_queues(3);
  for (uint16_t s = 0; s < Session::kStreams; ++s) {
    EXPECT_EQ(c.peer_of(s).udp_port, 7470 + (7 + (s == Session::kPreemptStream ? 0 : s)) % 3) << s;
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

namespace {

// Two one-part sessions, source and destination, over a FakeLink, with
// unix sockets standing in for the two QEMUs (e2e_migrate_multifd4_through_daemons
// runs real ones): the source "QEMU" connects its main channel and one
// multifd channel to the source session, the destination session connects
// to the destination "QEMU"'s listener.
struct TwoSessions {
  TwoSessions() : link({}) {
    const std::string base = "/tmp/mm-end-test-" + std::to_string(::getpid());
    src_path = base + "-src.sock";
    dst_path = base + "-dst.sock";
    ::unlink(dst_path.c_str());
    dst_listen = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_un a = address(dst_path);
    EXPECT_EQ(::bind(dst_listen, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(dst_listen, 8), 0);
    cfg.max_payload = link.end(0).max_datagram() - uint32_t(wire::kHeaderSize);
    cfg.dead_timeout_ns = 2 * kSec;
    SessionParams s;
    s.id = 9;
    s.role = Role::source;
    s.qemu_uri = "unix:" + src_path;
    s.peer = link.end(1).local_address();
    s.pages.codec = pages::CodecKind::raw;
    s.pages.auto_codec = false;
    s.pages.unchanged = false;
    src = std::make_unique<Session>(s, cfg, now);
    SessionParams d;
    d.id = 9;
    d.role = Role::destination;
    d.qemu_uri = "unix:" + dst_path;
    dst = std::make_unique<Session>(d, cfg, now);
  }
  ~TwoSessions() {
    for (int fd : {src_main, src_multifd, dst_main, dst_multifd, dst_listen}) {
      if (fd >= 0) ::close(fd);
    }
    ::unlink(dst_path.c_str());
  }
  static sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    return a;
  }
  int connect_source() {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a = address(src_path);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }
  static void put(int fd, const std::vector<uint8_t>& b) {
    ASSERT_EQ(::write(fd, b.data(), b.size()), ssize_t(b.size()));
  }
  void deliver(Session& s, test::FakeLink::End& e) {
    std::array<transport::RxDatagram, 32> rx;
    for (uint16_t n; (n = e.rx_burst(rx)) > 0;) {
      for (uint16_t i = 0; i < n; ++i) {
        wire::Header h;
        std::span<const uint8_t> payload;
        if (wire::decode_packet({rx[i].data, rx[i].len}, h, payload) == wire::DecodeError::ok) {
          s.on_packet(h, payload, rx[i].from, now);
        }
      }
      e.rx_release();
    }
  }
  // Reads what the destination daemon wrote to "QEMU"; -1 fds are closed.
  static bool drain(int fd, std::vector<uint8_t>& into) {
    uint8_t buf[65536];
    for (;;) {
      const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        into.insert(into.end(), buf, buf + r);
        continue;
      }
      return r == 0;  // EOF
    }
  }
  // 100 us of simulated time: both sessions poll, the link carries.
  void step() {
    now += 100'000;
    link.advance(100'000);
    src->poll(now, link.end(0));
    dst->poll(now, link.end(1));
    deliver(*dst, link.end(1));
    deliver(*src, link.end(0));
    // The destination "QEMU" takes the main channel first (QEMU 7.2 does).
    for (int fd; accepted < 2 && (fd = ::accept4(dst_listen, nullptr, nullptr, SOCK_NONBLOCK)) >= 0;
         ++accepted) {
      (accepted == 0 ? dst_main : dst_multifd) = fd;
    }
    if (dst_main >= 0 && drain(dst_main, main_in)) {
      ::close(dst_main);  // loaded: QEMU closes its main channel
      dst_main = -2;
    }
    if (dst_multifd >= 0) drain(dst_multifd, multifd_in);
  }
  template <class Done>
  void run_until(Done done, int steps = 20000) {
    for (int i = 0; i < steps && !done(); ++i) step();
  }

  test::FakeLink link;
  transport::TransportConfig cfg;
  uint64_t now = 1'000'000;
  std::string src_path, dst_path;
  std::unique_ptr<Session> src, dst;
  int dst_listen = -1, src_main = -1, src_multifd = -1, dst_main = -1, dst_multifd = -1;
  int accepted = 0;
  std::vector<uint8_t> main_in, multifd_in;
};

// The beginning of a QEMU 7.2 main channel (QEVM, version 3, a
// configuration section) and its QEMU_VM_EOF.
std::vector<uint8_t> main_channel() {
  return {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 0x07, 0, 0, 0, 2, 'p', 'c', 0x00};
}

// stale: the next_packet_size QEMU leaves in a packet without pages.
std::vector<uint8_t> multifd_packet(uint64_t num, uint32_t flags, uint32_t pages,
                                    uint32_t stale = 0) {
  qemu::MultifdPacketHeader h;
  h.flags = flags;
  h.pages_alloc = 128;
  h.normal_pages = pages;
  h.next_packet_size = pages ? pages * qemu::kTargetPageSize : stale;
  h.packet_num = num;
  h.ramblock = "pc.ram";
  for (uint32_t i = 0; i < pages; ++i) h.offsets.push_back((num * 128 + i) * qemu::kTargetPageSize);
  std::vector<uint8_t> b = qemu::encode_multifd_header(h);
  for (uint32_t i = 0; i < pages; ++i)
    b.resize(b.size() + qemu::kTargetPageSize, uint8_t(num + i + 1));
  return b;
}

std::vector<uint8_t> multifd_init() {
  std::vector<uint8_t> b(qemu::kMultifdInitSize);
  qemu::MultifdInit mi;
  qemu::encode_multifd_init(mi, std::span<uint8_t, qemu::kMultifdInitSize>(b.data(), b.size()));
  return b;
}

// Starts a migration: the source "QEMU" connects and sends its main
// channel's start and the multifd channel's init and `packets`; returns
// once the destination "QEMU" has read them all.
void start(TwoSessions& t, const std::vector<std::vector<uint8_t>>& packets) {
  t.src_main = t.connect_source();
  TwoSessions::put(t.src_main, main_channel());
  t.src_multifd = t.connect_source();
  std::vector<uint8_t> want = multifd_init();
  TwoSessions::put(t.src_multifd, want);
  for (const auto& p : packets) {
    TwoSessions::put(t.src_multifd, p);
    want.insert(want.end(), p.begin(), p.end());
  }
  t.run_until([&] { return t.multifd_in.size() >= want.size(); });
  ASSERT_EQ(t.multifd_in, want) << "the destination QEMU has every packet up to here; destination "
                                << to_string(t.dst->state()) << " " << t.dst->info().error;
  ASSERT_EQ(t.dst->state(), SessionState::precopy) << t.dst->info().error;
}

}  // namespace

TEST(SessionEnd, AnEmptyPacketAfterTheLastSyncDoesNotFailAMigrationTheDestinationCompleted) {
  // QEMU 7.2 may send a packet with neither pages nor SYNC right after
  // its last SYNC (QEMU-7.2-STREAM.md, "An empty packet after a SYNC").
  // The destination QEMU, with its last SYNC read, loads the device state
  // and shuts its multifd channels (multifd_load_cleanup) before it
  // arrives: both sessions must still complete.
  TwoSessions t;
  const uint32_t sync = qemu::multifd_flag::sync;
  start(t, {multifd_packet(1, sync, 0), multifd_packet(8, sync, 2), multifd_packet(11, sync, 4)});
  ::close(t.dst_multifd);  // multifd_load_cleanup
  t.dst_multifd = -2;
  TwoSessions::put(t.src_multifd, multifd_packet(11, 0, 0, 4 * qemu::kTargetPageSize));
  ::close(t.src_multifd);
  t.src_multifd = -1;
  ::close(t.src_main);
  t.src_main = -1;
  t.run_until(
      [&] { return engine::is_terminal(t.dst->state()) && engine::is_terminal(t.src->state()); });
  EXPECT_EQ(t.dst->state(), SessionState::completed) << t.dst->info().error;
  EXPECT_EQ(t.src->state(), SessionState::completed) << t.src->info().error;
  EXPECT_EQ(t.main_in, main_channel());
  EXPECT_EQ(t.dst->info().counters.empty_packets_dropped, 1u);
}

TEST(SessionEnd, ADestinationQemuThatClosesAChannelBeforeItsLastSyncFailsTheSession) {
  // The same end, but the destination QEMU shut the channel before the
  // SYNC its main thread waits for: that migration cannot complete.
  TwoSessions t;
  const uint32_t sync = qemu::multifd_flag::sync;
  start(t, {multifd_packet(1, sync, 0), multifd_packet(8, 0, 2)});
  ::close(t.dst_multifd);
  t.dst_multifd = -2;
  TwoSessions::put(t.src_multifd, multifd_packet(11, sync, 4));
  t.run_until(
      [&] { return engine::is_terminal(t.dst->state()) && engine::is_terminal(t.src->state()); });
  EXPECT_EQ(t.dst->state(), SessionState::failed);
  EXPECT_NE(t.dst->info().error.find("multifd channel 0: write to QEMU"), std::string::npos)
      << t.dst->info().error;
  EXPECT_EQ(t.src->state(), SessionState::failed);
  EXPECT_NE(t.src->info().error.find("peer failed the session"), std::string::npos)
      << t.src->info().error;
}
