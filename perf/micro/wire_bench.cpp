// MMP wire codec cost per packet, next to a memcpy of the same bytes in the
// same run: sealing (header + CRC32C) and validating a 9000-byte datagram
// should cost a fraction of copying it; AES-256-GCM sealing and opening
// (encrypted sessions, PacketCipher) are measured against the same copy.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"

using namespace mm::wire;

namespace {
constexpr size_t kPayload = 9000 - kIpUdpOverhead - kHeaderSize;

std::vector<uint8_t> payload() {
  std::vector<uint8_t> p(kPayload);
  for (size_t i = 0; i < p.size(); ++i) p[i] = uint8_t(i * 131 + 7);
  return p;
}
}  // namespace

static void BM_MemcpyBaseline(benchmark::State& st) {
  auto src = payload();
  std::vector<uint8_t> dst(src.size());
  for (auto _ : st) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(int64_t(st.iterations() * src.size()));
}
BENCHMARK(BM_MemcpyBaseline);

static void BM_SealHeader(benchmark::State& st) {
  auto p = payload();
  std::array<uint8_t, kHeaderSize> hdr;
  Header h;
  h.session = 1;
  for (auto _ : st) {
    ++h.seq;
    benchmark::DoNotOptimize(seal_header(h, p, hdr));
  }
  st.SetBytesProcessed(int64_t(st.iterations() * p.size()));
}
BENCHMARK(BM_SealHeader);

static void BM_DecodePacket(benchmark::State& st) {
  auto p = payload();
  std::vector<uint8_t> d(kHeaderSize + p.size());
  Header h;
  h.session = 1;
  seal_header(h, p, std::span<uint8_t, kHeaderSize>(d.data(), kHeaderSize));
  std::memcpy(d.data() + kHeaderSize, p.data(), p.size());
  for (auto _ : st) {
    Header out;
    std::span<const uint8_t> pl;
    benchmark::DoNotOptimize(decode_packet(d, out, pl));
  }
  st.SetBytesProcessed(int64_t(st.iterations() * d.size()));
}
BENCHMARK(BM_DecodePacket);

static void BM_GcmSealPacket(benchmark::State& st) {
  auto p = payload();
  std::vector<uint8_t> out(p.size() + kTagSize);
  std::array<uint8_t, kHeaderSize> hdr;
  const PacketCipher c(CipherKey{1, 2, 3}, Direction::source_to_destination, true);
  Header h;
  h.session = 1;
  for (auto _ : st) {
    ++h.auth;  // a new transmission number, as every transmission has
    benchmark::DoNotOptimize(c.seal(h, p, out.data(), hdr));
  }
  st.SetBytesProcessed(int64_t(st.iterations() * p.size()));
}
BENCHMARK(BM_GcmSealPacket);

static void BM_GcmOpenPacket(benchmark::State& st) {
  auto p = payload();
  std::vector<uint8_t> d(kHeaderSize + p.size() + kTagSize), out(p.size());
  const PacketCipher tx(CipherKey{1, 2, 3}, Direction::source_to_destination, true);
  const PacketCipher rx(CipherKey{1, 2, 3}, Direction::source_to_destination, false);
  Header h;
  h.session = 1;
  tx.seal(h, p, d.data() + kHeaderSize, std::span<uint8_t, kHeaderSize>(d.data(), kHeaderSize));
  for (auto _ : st) {
    Header in;
    std::span<const uint8_t> pl;
    decode_packet(d, in, pl);
    if (!rx.open(in, pl, out.data())) st.SkipWithError("a sealed packet did not open");
  }
  st.SetBytesProcessed(int64_t(st.iterations() * p.size()));
}
BENCHMARK(BM_GcmOpenPacket);

BENCHMARK_MAIN();
