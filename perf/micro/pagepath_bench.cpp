// The whole page path of one multifd channel, per page and per side, on
// real DPDK ports: QEMU 7.2 multifd bytes (MultiFDInit, then packets of 128
// pages made with qemu/MultifdPacket's encoder) written into a socketpair
// -> the source path (MultifdSource: parse, page records straight into the
// stream's slots; StreamSender) -> MMP frames over a net_ring port pair ->
// the destination path (StreamReceiver, MultifdRebuilder, ChannelRelay:
// decode, hash check, packet rebuilt and written from its parts) -> bytes
// read from a socketpair and checked byte-identical against the input.
// Each side's calls are timed separately; allocations are counted over the
// measured loop (global operator new of this binary); a memcpy of a page
// and LZ4's own compress rate on the same corpus are the baselines.
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "AllocationCounter.hpp"
#include "BenchPorts.hpp"
#include "PageCorpus.hpp"
#include "dataplane/engine/PageChannels.hpp"
#include "dataplane/port/Eal.hpp"
#include "dataplane/port/EthPort.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/transport/Connection.hpp"

using namespace mm;
using mm::test::PageKind;

namespace {

using bench::kMtu;
constexpr uint32_t kPacketPages = 128;  // QEMU 7.2's pages_alloc
// 64 packets (32 MiB of pages) per pass: twice the dictionary, so a replay
// finds nothing in it, like a first pass over guest memory.
constexpr size_t kPackets = 64;
constexpr uint32_t kDedupeSlots = 4096;

std::unique_ptr<port::EthPort> g_a, g_b;

uint64_t now_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

// A port's pending transmit burst goes out (ports that buffer it).
template <class Port>
void tx_flush(Port& p) {
  if constexpr (requires { p.tx_flush(); }) p.tx_flush();
}

// The QEMU bytes of one pass: every packet with its header, back to back.
struct Corpus {
  std::vector<uint8_t> init;     // MultiFDInit
  std::vector<uint8_t> packets;  // kPackets packets
  size_t packet_bytes = 0;
  std::vector<uint8_t> pages;    // the pages alone (for the baselines)
};

const Corpus& corpus(PageKind kind) {
  static std::unique_ptr<Corpus> made[5];
  auto& c = made[int(kind)];
  if (c) return *c;
  c = std::make_unique<Corpus>();
  c->init.resize(qemu::kMultifdInitSize);
  qemu::encode_multifd_init({}, std::span<uint8_t, qemu::kMultifdInitSize>(c->init.data(), qemu::kMultifdInitSize));
  c->pages = mm::test::corpus(kind, kPackets * kPacketPages);
  for (size_t k = 0; k < kPackets; ++k) {
    qemu::MultifdPacketHeader h;
    h.pages_alloc = kPacketPages;
    h.normal_pages = kPacketPages;
    h.next_packet_size = kPacketPages * qemu::kTargetPageSize;
    h.packet_num = k;
    h.ramblock = "pc.ram";
    for (uint32_t i = 0; i < kPacketPages; ++i) h.offsets.push_back((k * kPacketPages + i) * qemu::kTargetPageSize);
    const auto hb = qemu::encode_multifd_header(h);
    c->packet_bytes = hb.size() + size_t(kPacketPages) * qemu::kTargetPageSize;
    c->packets.insert(c->packets.end(), hb.begin(), hb.end());
    const uint8_t* p = c->pages.data() + k * kPacketPages * qemu::kTargetPageSize;
    c->packets.insert(c->packets.end(), p, p + size_t(kPacketPages) * qemu::kTargetPageSize);
  }
  return *c;
}

// The input as an endless tape: the MultiFDInit, then the pass repeated;
// the bytes from `pos` to the end of their piece.
size_t tape_span(const Corpus& c, uint64_t pos, const uint8_t*& p) {
  if (pos < c.init.size()) {
    p = c.init.data() + pos;
    return c.init.size() - pos;
  }
  const size_t off = (pos - c.init.size()) % c.packets.size();
  p = c.packets.data() + off;
  return c.packets.size() - off;
}

void set_buffers(int fd, int bytes) {
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

// Everything pending on `port` into `conn`.
void receive(transport::DatagramPort& port, transport::Connection& conn, uint64_t now) {
  transport::RxDatagram rx[32];
  for (uint16_t n; (n = port.rx_burst(rx)) > 0;) {
    for (uint16_t i = 0; i < n; ++i) {
      wire::Header h;
      std::span<const uint8_t> p;
      if (wire::decode_packet({rx[i].data, rx[i].len}, h, p) != wire::DecodeError::ok) continue;
      // As the engine does: an encrypted session opens each datagram first.
      if (conn.encrypted() && conn.open(h, p) != transport::Connection::Open::ok) continue;
      conn.on_packet(h, p, now);
    }
    port.rx_release();
  }
}

// LZ4's own rate on the corpus's pages (ns per page), measured once.
double lz4_ns_per_page(PageKind kind) {
  static double measured[5] = {};
  if (measured[int(kind)] > 0) return measured[int(kind)];
  const Corpus& c = corpus(kind);
  pages::Lz4Codec lz4;
  std::vector<uint8_t> out(pages::kCompressBound);
  const size_t n = c.pages.size() / pages::kPageSize;
  size_t sink = 0;
  const uint64_t t0 = now_ns();
  for (int rep = 0; rep < 3; ++rep) {
    for (size_t i = 0; i < n; ++i) sink += lz4.compress(c.pages.data() + i * pages::kPageSize, out.data(), out.size());
  }
  benchmark::DoNotOptimize(sink);
  measured[int(kind)] = double(now_ns() - t0) / double(3 * n);
  return measured[int(kind)];
}

transport::TransportConfig bench_config(bool encrypted) {
  transport::TransportConfig c;
  c.window = 1024;
  c.max_payload = g_a->max_datagram() - uint32_t(wire::kHeaderSize) - (encrypted ? uint32_t(wire::kTagSize) : 0);
  c.rto_min_ns = 200'000;
  return c;
}

void BM_PagePath(benchmark::State& st) {
  if (!g_a) return st.SkipWithError("net_ring ports not available");
  const PageKind kind = PageKind(st.range(0));
  pages::PagePolicy pol;
  pol.codec = pages::CodecKind(st.range(1));
  pol.dedupe_slots = kDedupeSlots;
  const Corpus& c = corpus(kind);

  engine::CodecSet codecs("");
  engine::MultifdSource source(0, pol, codecs.get(pol.codec, nullptr), nullptr, 1 << 20);
  qemu::ChannelRelay src_relay(0), dst_relay(5 << 20);
  engine::MultifdRebuilder rebuilder(&codecs);
  int qin[2], qout[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, qin) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, qout) != 0) {
    return st.SkipWithError("socketpair");
  }
  for (int fd : {qin[0], qin[1], qout[0], qout[1]}) set_buffers(fd, 4 << 20);
  src_relay.attach(qin[1]);
  dst_relay.attach(qout[0]);
  // What an earlier run left in the rings is not this run's.
  for (auto* port : {g_a.get(), g_b.get()}) {
    transport::RxDatagram rx[32];
    while (port->rx_burst(rx) > 0) port->rx_release();
  }
  const bool encrypted = st.range(2) != 0;
  const transport::TransportConfig cfg = bench_config(encrypted);
  transport::Connection ca(cfg, 1, 1, 1 << 20, now_ns()), cb(cfg, 1, 1, 1 << 20, now_ns());
  ca.set_peer(g_b->local_address());
  cb.set_peer(g_a->local_address());
  if (encrypted) {
    // AES-256-GCM as a session negotiated over the peer channel has it:
    // keys of its own for every run (the daemons derive theirs per
    // session), so that a late datagram of an earlier run is no replay.
    static uint8_t run = 0;
    ++run;
    wire::SessionKeys ka, kb;
    for (size_t i = 0; i < ka.tx.size(); ++i) {
      ka.tx[i] = kb.rx[i] = uint8_t(i + run);
      ka.rx[i] = kb.tx[i] = uint8_t(i + 101 + run);
    }
    kb.tx_direction = wire::Direction::destination_to_source;
    ka.engine = kb.engine = st.range(2) == 2 ? wire::CipherEngine::openssl : wire::CipherEngine::automatic;
    ca.set_cipher(ka);
    cb.set_cipher(kb);
  }
  // As the engine does: send windows in the port's buffers, sent by
  // reference (the source then writes page records across them).
  ca.set_port_buffers(g_a.get());
  cb.set_port_buffers(g_b.get());

  uint64_t fed = 0, got = 0;  // tape positions written to the source, read from the destination
  uint64_t src_ns = 0, dst_ns = 0, allocs = 0, packets = 0;
  std::vector<uint8_t> buf(1 << 20);
  bool broken = false;
  auto one_round = [&](bool timed) {
    // "QEMU" writes ahead by up to 4 packets.
    while (fed < got + 4 * c.packet_bytes) {
      const uint8_t* p;
      const size_t n = std::min<size_t>(tape_span(c, fed, p), got + 4 * c.packet_bytes - fed);
      const ssize_t w = ::write(qin[0], p, n);
      if (w <= 0) break;
      fed += uint64_t(w);
    }
    if (timed) test::AllocationCounter::resume();
    const uint64_t t0 = now_ns();
    bool work = false;
    if (!source.pump(src_relay, ca.sender(0), {}, work)) broken = true;
    receive(*g_a, ca, t0);  // ACKs
    ca.flush(t0, *g_a);
    tx_flush(*g_a);
    const uint64_t t1 = now_ns();
    receive(*g_b, cb, t1);
    if (!rebuilder.pump(cb.receiver(0), dst_relay)) broken = true;
    cb.flush(t1, *g_b);
    tx_flush(*g_b);
    const uint64_t t2 = now_ns();
    if (timed) {
      test::AllocationCounter::pause();
      src_ns += t1 - t0;
      dst_ns += t2 - t1;
    }
    // "QEMU" at the destination reads and checks (not timed).
    for (;;) {
      const ssize_t r = ::read(qout[1], buf.data(), buf.size());
      if (r <= 0) break;
      for (ssize_t i = 0; i < r;) {
        const uint8_t* p;
        const size_t n = std::min<size_t>(tape_span(c, got, p), size_t(r - i));
        if (std::memcmp(buf.data() + i, p, n) != 0) broken = true;
        i += ssize_t(n);
        got += n;
      }
    }
  };
  // Warm-up: one pass through every buffer, outside the measurement.
  while (got < c.init.size() + c.packets.size() && !broken) one_round(false);
  const uint64_t start = got;
  test::AllocationCounter::start();
  test::AllocationCounter::pause();
  for (auto _ : st) {
    // One iteration: one more QEMU packet out of the destination.
    const uint64_t until = start + (packets + 1) * c.packet_bytes;
    for (int spin = 0; got < until && !broken && spin < 1'000'000; ++spin) one_round(true);
    if (broken || got < until) break;
    ++packets;
  }
  allocs = test::AllocationCounter::stop();
  ::close(qin[0]);
  ::close(qout[1]);
  if (broken) return st.SkipWithError(("page path broken: " + source.error() + rebuilder.error()).c_str());
  if (packets == 0) return st.SkipWithError("no packet came through");
  const double pages = double(packets * kPacketPages);
  const double src = double(src_ns) / pages, dst = double(dst_ns) / pages;
  st.SetLabel(std::string(mm::test::name(kind)) + "/" + std::string(pages::to_string(pol.codec)) +
              (encrypted ? std::string("/aes-gcm/") + wire::to_string(ca.rx_cipher_engine()) : std::string()));
  st.SetItemsProcessed(int64_t(pages));
  st.counters["src_ns/page"] = src;
  st.counters["dst_ns/page"] = dst;
  st.counters["src_Mpages/s"] = 1e3 / src;
  st.counters["dst_Mpages/s"] = 1e3 / dst;
  st.counters["allocs/packet"] = double(allocs) / double(packets);
  if (encrypted) {
    // An honest path refuses nothing; a count here would be a bug.
    st.counters["refused"] = double(ca.stats().rx_bad_tag + cb.stats().rx_bad_tag + ca.stats().rx_replayed +
                                    cb.stats().rx_replayed);
    const auto& tx = ca.sender(0).stats();
    st.counters["sealed_in_frame"] = double(tx.sealed_in_frame) / double(std::max<uint64_t>(1, tx.packets + tx.retransmits));
  }
  st.counters["wire/qemu"] = double(ca.sender(0).stats().payload_bytes) /
                             double(fed > 0 ? fed : 1);
  if (pol.codec == pages::CodecKind::lz4) {
    const double lz4 = lz4_ns_per_page(kind);
    st.counters["lz4_ns/page"] = lz4;
    st.counters["src_rate/lz4_rate"] = lz4 / src;
  }
}

void BM_MemcpyPage(benchmark::State& st) {
  const Corpus& c = corpus(PageKind(st.range(0)));
  std::vector<uint8_t> dst(pages::kPageSize);
  const size_t n_pages = c.pages.size() / pages::kPageSize;
  size_t n = 0;
  for (auto _ : st) {
    std::memcpy(dst.data(), c.pages.data() + (n++ % n_pages) * pages::kPageSize, pages::kPageSize);
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(int64_t(n));
  st.SetBytesProcessed(int64_t(n * pages::kPageSize));
}

void BM_Lz4CompressPage(benchmark::State& st) {
  const Corpus& c = corpus(PageKind(st.range(0)));
  pages::Lz4Codec lz4;
  std::vector<uint8_t> out(pages::kCompressBound);
  const size_t n_pages = c.pages.size() / pages::kPageSize;
  size_t n = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(lz4.compress(c.pages.data() + (n++ % n_pages) * pages::kPageSize, out.data(), out.size()));
  }
  st.SetItemsProcessed(int64_t(n));
}

// Third argument: 1 = the session encrypted (AES-256-GCM, the daemon's
// default engine: intel-ipsec-mb here), 2 = encrypted through OpenSSL's
// EVP; each case next to its plaintext twin in the same run, so the cost
// is a ratio.
void paths(benchmark::internal::Benchmark* b) {
  const std::pair<PageKind, pages::CodecKind> cases[] = {
      {PageKind::mix, pages::CodecKind::raw},    {PageKind::mix, pages::CodecKind::lz4},
      {PageKind::mix, pages::CodecKind::zstd},   {PageKind::random, pages::CodecKind::raw},
      {PageKind::text, pages::CodecKind::lz4}};
  for (auto [kind, codec] : cases) {
    for (int enc : {0, 1, 2}) b->Args({int(kind), int(codec), enc});
  }
}

using bench::ring_port;

}  // namespace

BENCHMARK(BM_MemcpyPage)->Arg(int(PageKind::mix));
BENCHMARK(BM_Lz4CompressPage)->Arg(int(PageKind::mix))->Arg(int(PageKind::text));
BENCHMARK(BM_PagePath)->Apply(paths)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  const std::string tag = std::to_string(getpid());
  port::init_eal({"pagepath_bench", "--no-huge", "-m", "1024", "--no-pci", "--no-telemetry",
                  "--file-prefix=mm-ppb-" + tag, "--log-level=warning"});
  rte_ring* r1 = rte_ring_create("mmp_r1", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* r2 = rte_ring_create("mmp_r2", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  g_a = ring_port("mmp_ring_a", r1, r2, 0x0A000001);
  g_b = ring_port("mmp_ring_b", r2, r1, 0x0A000002);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_a.reset();
  g_b.reset();
  return 0;
}
