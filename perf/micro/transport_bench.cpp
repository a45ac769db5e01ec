// Transport throughput per core on real DPDK ports, next to the raw port
// rate measured in the same run: two net_ring ports back to back (in
// process) and a memif server/client pair. One thread drives both ends, so
// the figures are "per core for sender + receiver together".
//   BM_RawPort       EthPort tx/rx of 9000-byte frames, no transport
//   BM_Transport     reliable stream A->B (CRC, copies, ACKs), 0/0.1/1/5% loss
//   BM_LossRecovery  time from a burst of 64 lost packets to their repair
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "BenchPorts.hpp"
#include "dataplane/engine/Engine.hpp"
#include "dataplane/port/Eal.hpp"
#include "dataplane/port/EthPort.hpp"
#include "dataplane/transport/Connection.hpp"

using namespace mm;

namespace {

using bench::bench_profile;
using bench::kMtu;
using bench::ring_port;

struct Rig {
  std::unique_ptr<port::EthPort> a, b;
};
Rig g_ring, g_memif;

// Drops a share of what the transport sends (pretending it left), the way
// a lossy wire would. Real loss on real ports is what the integration tests
// inject with XDP; here the point is the transport's own cost of recovery.
class LossyTx : public transport::DatagramPort {
 public:
  LossyTx(transport::DatagramPort& inner, uint32_t drop_ppm) : in_(inner), ppm_(drop_ppm) {}
  uint16_t rx_burst(std::span<transport::RxDatagram> out) override { return in_.rx_burst(out); }
  void rx_release() override { in_.rx_release(); }
  uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override {
    transport::TxDatagram keep[32];
    uint16_t n = 0;
    for (const auto& p : pkts.first(std::min<size_t>(pkts.size(), 32))) {
      if (burst_left_ > 0) {
        --burst_left_;
        continue;
      }
      if (ppm_ == 0 || rng_() % 1'000'000 >= ppm_) keep[n++] = p;
    }
    const uint16_t sent = in_.tx_burst({keep, n});
    return sent == n ? uint16_t(std::min<size_t>(pkts.size(), 32)) : 0;
  }
  void tx_flush() override { in_.tx_flush(); }
  bool alloc_tx_buffers(std::span<transport::TxBuffer> out, uint32_t room) override {
    return in_.alloc_tx_buffers(out, room);
  }
  void free_tx_buffers(std::span<const transport::TxBuffer> bufs) override { in_.free_tx_buffers(bufs); }
  uint32_t max_datagram() const override { return in_.max_datagram(); }
  transport::PeerAddress local_address() const override { return in_.local_address(); }
  void drop_next(uint32_t n) { burst_left_ = n; }

 private:
  transport::DatagramPort& in_;
  uint32_t ppm_;
  uint32_t burst_left_ = 0;
  std::mt19937 rng_{7};
};

// Receives everything pending on `port` and feeds it to `conn`.
uint32_t pump(transport::DatagramPort& port, transport::Connection& conn, uint64_t now) {
  transport::RxDatagram rx[32];
  uint32_t total = 0;
  for (;;) {
    const uint16_t n = port.rx_burst(rx);
    for (uint16_t i = 0; i < n; ++i) {
      wire::Header h;
      std::span<const uint8_t> p;
      if (wire::decode_packet({rx[i].data, rx[i].len}, h, p) == wire::DecodeError::ok) {
        conn.on_packet(h, p, now);
      }
    }
    port.rx_release();
    total += n;
    if (n == 0) return total;
  }
}

void BM_RawPort(benchmark::State& st, Rig* rig) {
  if (!rig->a) return st.SkipWithError("port not available");
  std::vector<uint8_t> payload(kMtu - 28, 0x5A);
  const transport::PeerAddress to = rig->b->local_address();
  transport::TxDatagram tx[32];
  for (auto& t : tx) t = {&to, 50000, payload.data(), uint32_t(payload.size()), nullptr, 0};
  transport::RxDatagram rx[32];
  uint64_t frames = 0;
  for (auto _ : st) {
    const uint16_t sent = rig->a->tx_burst(tx);
    rig->a->tx_flush();
    uint16_t got = 0;
    for (int spin = 0; got < sent && spin < 1000; ++spin) {
      got += rig->b->rx_burst(rx);
      rig->b->rx_release();
    }
    frames += got;
  }
  st.SetBytesProcessed(int64_t(frames * (kMtu + 14)));
  st.counters["Mpps"] = benchmark::Counter(double(frames) / 1e6, benchmark::Counter::kIsRate);
  st.counters["Gbit/s"] = benchmark::Counter(double(frames) * (kMtu + 14) * 8 / 1e9, benchmark::Counter::kIsRate);
}

transport::TransportConfig bench_config(const port::EthPort& p) {
  transport::TransportConfig c;
  c.window = 1024;
  c.max_payload = p.max_datagram() - uint32_t(wire::kHeaderSize);
  c.rto_min_ns = 200'000;
  return c;
}

void BM_Transport(benchmark::State& st, Rig* rig) {
  if (!rig->a) return st.SkipWithError("port not available");
  const uint32_t ppm = uint32_t(st.range(0));
  const auto cfg = bench_config(*rig->a);
  const uint64_t t0 = engine::now_ns();
  transport::Connection ca(cfg, 1, 1, 1 << 20, t0), cb(cfg, 1, 1, 1 << 20, t0);
  ca.set_peer(rig->b->local_address());
  cb.set_peer(rig->a->local_address());
  LossyTx lossy(*rig->a, ppm);
  // As the engine does: send windows in the port's buffers (by reference).
  if (st.range(1)) {
    ca.set_port_buffers(&lossy);
    cb.set_port_buffers(rig->b.get());
  }
  std::vector<uint8_t> msg(cfg.max_payload, 0xA5);
  uint64_t delivered = 0;
  for (auto _ : st) {
    const uint64_t now = engine::now_ns();
    while (ca.sender(0).submit_message(msg)) {
    }
    ca.flush(now, lossy);
    lossy.tx_flush();
    pump(*rig->b, cb, now);
    cb.receiver(0).deliver([&](std::span<const uint8_t> m) {
      delivered += m.size();
      return true;
    });
    cb.flush(now, *rig->b);
    rig->b->tx_flush();
    pump(*rig->a, ca, now);
  }
  const auto& s = ca.sender(0).stats();
  const auto& r = cb.receiver(0).stats();
  // A duplicate at the receiver is a retransmission that was not needed.
  st.counters["spurious_%"] = s.packets ? 100.0 * double(r.duplicates) / double(s.packets) : 0;
  st.counters["rack"] = double(s.fast_retransmits);
  st.counters["tlp"] = double(s.tail_probes);
  st.counters["rto"] = double(s.rto_events);
  st.counters["reductions"] = double(s.window_reductions);
  st.counters["cwnd"] = double(ca.sender(0).cwnd());
  st.counters["zero_copy"] = ca.sender(0).zero_copy() ? 1 : 0;
  st.SetBytesProcessed(int64_t(delivered));
  st.counters["goodput_Gbit/s"] = benchmark::Counter(double(delivered) * 8 / 1e9, benchmark::Counter::kIsRate);
  st.counters["Mpps"] = benchmark::Counter(double(s.packets + s.retransmits) / 1e6, benchmark::Counter::kIsRate);
  st.counters["retransmit_%"] = s.packets ? 100.0 * double(s.retransmits) / double(s.packets) : 0;
}

void BM_LossRecovery(benchmark::State& st, Rig* rig) {
  if (!rig->a) return st.SkipWithError("port not available");
  const auto cfg = bench_config(*rig->a);
  std::vector<uint8_t> msg(cfg.max_payload, 0x3C);
  double total_us = 0;
  int bursts = 0;
  for (auto _ : st) {
    const uint64_t t0 = engine::now_ns();
    transport::Connection ca(cfg, 2, 1, 1 << 20, t0), cb(cfg, 2, 1, 1 << 20, t0);
    ca.set_peer(rig->b->local_address());
    cb.set_peer(rig->a->local_address());
    LossyTx lossy(*rig->a, 0);
    // Steady state first, then 64 consecutive packets vanish; recovery
    // ends when the receiver's cumulative ACK has passed all of them.
    uint32_t burst_end = 0;
    uint64_t burst_at = 0;
    for (int round = 0; round < 200000; ++round) {
      const uint64_t now = engine::now_ns();
      while (ca.sender(0).submit_message(msg)) {
      }
      if (round == 200) {
        burst_at = now;
        lossy.drop_next(64);
        burst_end = ca.sender(0).stats().packets + 64;
      }
      ca.flush(now, lossy);
      lossy.tx_flush();
      pump(*rig->b, cb, now);
      cb.receiver(0).deliver([](std::span<const uint8_t>) { return true; });
      cb.flush(now, *rig->b);
      rig->b->tx_flush();
      pump(*rig->a, ca, now);
      if (burst_at && cb.receiver(0).stats().messages >= burst_end) {
        total_us += double(engine::now_ns() - burst_at) / 1e3;
        ++bursts;
        break;
      }
    }
    rig->b->rx_release();
    pump(*rig->a, ca, 0);
    pump(*rig->b, cb, 0);
  }
  st.counters["recovery_us"] = bursts ? total_us / bursts : -1;
}

void BM_MemcpyBaseline(benchmark::State& st) {
  std::vector<uint8_t> a(kMtu, 1), b(kMtu);
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), a.size());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(int64_t(st.iterations() * a.size()));
}


}  // namespace

BENCHMARK(BM_MemcpyBaseline);
BENCHMARK_CAPTURE(BM_RawPort, net_ring, &g_ring);
// Args: loss in ppm, send window in port buffers (1) or on the heap (0).
BENCHMARK_CAPTURE(BM_Transport, net_ring, &g_ring)
    ->Args({0, 0})->Args({0, 1})->Args({1000, 1})->Args({10000, 1})->Args({50000, 1});
BENCHMARK_CAPTURE(BM_LossRecovery, net_ring, &g_ring)->Iterations(20);
BENCHMARK_CAPTURE(BM_RawPort, memif, &g_memif);
BENCHMARK_CAPTURE(BM_Transport, memif, &g_memif)->Args({0, 0})->Args({0, 1})->Args({10000, 1});

int main(int argc, char** argv) {
  const std::string tag = std::to_string(getpid());
  const std::string sock = "/tmp/mm-bench-" + tag + ".sock";
  const std::string memif = ",socket=" + sock + ",socket-abstract=no,bsize=10240,rsize=11";
  port::init_eal({"transport_bench", "--no-huge", "-m", "1024", "--no-pci", "--no-telemetry",
                  "--file-prefix=mm-bench-" + tag, "--log-level=warning",
                  "--vdev=net_memif0,role=server,id=0" + memif,
                  "--vdev=net_memif1,role=client,id=0" + memif});
  rte_ring* r1 = rte_ring_create("mmb_r1", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* r2 = rte_ring_create("mmb_r2", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  g_ring.a = ring_port("mmb_ring_a", r1, r2, 0x0A000001);
  g_ring.b = ring_port("mmb_ring_b", r2, r1, 0x0A000002);
  try {
    g_memif.a = std::make_unique<port::EthPort>(bench_profile("net_memif"), 0x0A000101, 7470);
    uint16_t id0 = 0, id1 = 0;
    rte_eth_dev_get_port_by_name("net_memif0", &id0);
    rte_eth_dev_get_port_by_name("net_memif1", &id1);
    g_memif.b = std::make_unique<port::EthPort>(id1, bench_profile("net_memif"), 0x0A000102, 7470);
    // memif links come up once the client has connected to the server.
    bool up = false;
    for (int i = 0; i < 500 && !up; ++i) {
      rte_eth_link l0{}, l1{};
      rte_eth_link_get_nowait(id0, &l0);
      rte_eth_link_get_nowait(id1, &l1);
      up = l0.link_status && l1.link_status;
      if (!up) usleep(10000);
    }
    if (!up) throw std::runtime_error("memif link did not come up in 5 s");
    // A link reported up may still not carry frames for a moment: wait
    // until one makes it across before measuring.
    std::vector<uint8_t> hello(64, 1);
    const transport::PeerAddress to = g_memif.b->local_address();
    transport::TxDatagram t{&to, 50000, hello.data(), uint32_t(hello.size()), nullptr, 0};
    transport::RxDatagram r[32];
    bool through = false;
    for (int i = 0; i < 500 && !through; ++i) {
      g_memif.a->tx_burst({&t, 1});
      g_memif.a->tx_flush();
      usleep(10000);
      through = g_memif.b->rx_burst(r) > 0;
      g_memif.b->rx_release();
    }
    if (!through) throw std::runtime_error("no frame crossed the memif pair in 5 s");
    transport::RxDatagram drain[32];
    while (g_memif.b->rx_burst(drain) > 0) g_memif.b->rx_release();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memif pair unavailable: %s\n", e.what());
    g_memif.a.reset();
    g_memif.b.reset();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_ring = {};
  g_memif = {};
  ::unlink(sock.c_str());
  return 0;
}
