// Page pipeline stages per 4 KiB page, on generated corpora (zero, text,
// code, random, mix), next to memcpy of a page in the same run:
// zero check, XXH3-128 hash, dedupe lookup, LZ4 / zstd / DEFLATE
// (compressdev, ISA-L) both ways, and the whole source and destination
// pipelines as the daemon runs them (PageEncoder / PageDecoder, per codec),
// and both ends of PAGE_DELTA.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/pages/DedupeDictionary.hpp"
#include "dataplane/pages/Page.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/pages/UnchangedFilter.hpp"
#include "dataplane/port/Eal.hpp"

using namespace mm::pages;
using mm::test::PageKind;

namespace {
constexpr size_t kPages = 1024;  // 4 MiB per corpus: beyond L2, like real guest memory
std::unique_ptr<CompressdevDeflate> g_deflate;

PageKind kind_of(const benchmark::State& st) { return PageKind(st.range(0)); }

void per_page(benchmark::State& st, size_t pages) {
  st.SetItemsProcessed(int64_t(pages));
  st.SetBytesProcessed(int64_t(pages * kPageSize));
  st.SetLabel(mm::test::name(kind_of(st)));
}

void BM_MemcpyPage(benchmark::State& st) {
  auto c = mm::test::corpus(kind_of(st), kPages);
  std::vector<uint8_t> dst(kPageSize);
  size_t n = 0;
  for (auto _ : st) {
    std::memcpy(dst.data(), c.data() + (n++ % kPages) * kPageSize, kPageSize);
    benchmark::ClobberMemory();
  }
  per_page(st, n);
}

void BM_ZeroCheck(benchmark::State& st) {
  auto c = mm::test::corpus(kind_of(st), kPages);
  size_t n = 0;
  for (auto _ : st) benchmark::DoNotOptimize(is_zero_page(c.data() + (n++ % kPages) * kPageSize));
  per_page(st, n);
}

void BM_Hash(benchmark::State& st) {
  auto c = mm::test::corpus(kind_of(st), kPages);
  size_t n = 0;
  for (auto _ : st) benchmark::DoNotOptimize(page_hash(c.data() + (n++ % kPages) * kPageSize));
  per_page(st, n);
}

void BM_DedupeLookup(benchmark::State& st) {
  // Half the lookups hit (pages inserted), half miss.
  auto c = mm::test::corpus(PageKind::random, kPages);
  DedupeDictionary d(kPages);
  std::vector<PageHash> hashes(kPages);
  for (size_t i = 0; i < kPages; ++i) {
    hashes[i] = page_hash(c.data() + i * kPageSize);
    if (i % 2 == 0) d.insert(c.data() + i * kPageSize, hashes[i]);
  }
  size_t n = 0;
  for (auto _ : st) {
    const size_t i = n++ % kPages;
    benchmark::DoNotOptimize(d.find(c.data() + i * kPageSize, hashes[i]));
  }
  st.SetItemsProcessed(int64_t(n));
}

template <class Codec>
void compress_bench(benchmark::State& st, Codec& codec) {
  auto c = mm::test::corpus(kind_of(st), kPages);
  std::vector<uint8_t> out(kCompressBound);
  size_t n = 0, bytes_out = 0, raw = 0;
  for (auto _ : st) {
    const size_t k = codec.compress(c.data() + (n++ % kPages) * kPageSize, out.data(), out.size());
    bytes_out += k ? k : kPageSize;
    raw += k == 0;
  }
  per_page(st, n);
  st.counters["ratio"] = double(bytes_out) / double(n * kPageSize);
  st.counters["raw_%"] = 100.0 * double(raw) / double(n);
}

template <class Codec>
void decompress_bench(benchmark::State& st, Codec& codec) {
  auto c = mm::test::corpus(kind_of(st), kPages);
  std::vector<std::vector<uint8_t>> packed;
  for (size_t i = 0; i < kPages; ++i) {
    std::vector<uint8_t> out(kCompressBound);
    const size_t k = codec.compress(c.data() + i * kPageSize, out.data(), out.size());
    if (k) packed.emplace_back(out.begin(), out.begin() + long(k));
  }
  if (packed.empty()) return st.SkipWithError("nothing compressible in this corpus");
  std::vector<uint8_t> page(kPageSize);
  size_t n = 0;
  for (auto _ : st) {
    const auto& p = packed[n++ % packed.size()];
    benchmark::DoNotOptimize(codec.decompress(p.data(), p.size(), page.data()));
  }
  per_page(st, n);
}

void BM_Lz4Compress(benchmark::State& st) {
  Lz4Codec c;
  compress_bench(st, c);
}
void BM_Lz4Decompress(benchmark::State& st) {
  Lz4Codec c;
  decompress_bench(st, c);
}
void BM_ZstdCompress(benchmark::State& st) {
  ZstdCodec c;
  compress_bench(st, c);
}
void BM_ZstdDecompress(benchmark::State& st) {
  ZstdCodec c;
  decompress_bench(st, c);
}
void BM_DeflateCompressdevCompress(benchmark::State& st) {
  if (!g_deflate) return st.SkipWithError("compress_isal0 unavailable");
  compress_bench(st, *g_deflate);
}
void BM_DeflateCompressdevDecompress(benchmark::State& st) {
  if (!g_deflate) return st.SkipWithError("compress_isal0 unavailable");
  decompress_bench(st, *g_deflate);
}

// The whole source pipeline as the daemon runs it (PageEncoder: zero ->
// hash -> unchanged -> dedupe -> codec -> records), one QEMU packet of 128
// pages per step, on a first pass over 64 MiB of guest memory (no page seen
// before: the unchanged filter never hits; the dictionary, smaller than the
// corpus, hits only genuine duplicates). Arg 1: codec (0 none, 1 LZ4, 2 zstd).
constexpr size_t kPacketPages = 128;

PageCodec* codec_for(CodecKind k) {
  static Lz4Codec lz4;
  static ZstdCodec zstd;
  if (k == CodecKind::lz4) return &lz4;
  if (k == CodecKind::zstd) return &zstd;
  if (k == CodecKind::deflate) return g_deflate.get();
  return nullptr;
}

const std::vector<uint8_t>& pipeline_corpus(PageKind kind) {
  constexpr size_t kPipelinePages = 16384;
  static std::vector<uint8_t> corpora[5];
  auto& c = corpora[int(kind)];
  if (c.empty()) c = mm::test::corpus(kind, kPipelinePages);
  return c;
}

void BM_SourcePipeline(benchmark::State& st) {
  const auto& c = pipeline_corpus(kind_of(st));
  const size_t total = c.size() / kPageSize;
  PagePolicy pol;
  pol.codec = CodecKind(st.range(1));
  pol.dedupe_slots = 4096;
  if (pol.codec != CodecKind::raw && !codec_for(pol.codec)) {
    st.SkipWithError("codec unavailable");
    return;
  }
  UnchangedFilter filter;
  PageEncoder enc(pol, codec_for(pol.codec), &filter);
  std::vector<uint8_t> msg(PageEncoder::max_message(kPacketPages));
  std::vector<uint64_t> offsets(kPacketPages);
  size_t packets = 0;
  for (auto _ : st) {
    const size_t first = (packets++ * kPacketPages) % total;
    for (size_t i = 0; i < kPacketPages; ++i) offsets[i] = (first + i) * kPageSize;
    PacketView v;
    v.pages_alloc = kPacketPages;
    v.ramblock = "pc.ram";
    v.offsets = offsets;
    v.pages = c.data() + first * kPageSize;
    mm::wire::RecordWriter w(msg);
    enc.encode(v, 1, true, w);  // one epoch: the filter checks, never hits
    benchmark::DoNotOptimize(w.size());
  }
  per_page(st, packets * kPacketPages);
  st.counters["wire_ratio"] = double(enc.stats().record_bytes) / double(enc.stats().pages * kPageSize);
}

// The destination pipeline (PageDecoder: records -> decode -> hash check ->
// dictionary), on messages the encoder made from the corpus.
void BM_DestinationPipeline(benchmark::State& st) {
  const auto& c = pipeline_corpus(kind_of(st));
  PagePolicy pol;
  pol.codec = CodecKind(st.range(1));
  pol.unchanged = false;
  pol.dedupe_slots = 4096;
  if (pol.codec != CodecKind::raw && !codec_for(pol.codec)) {
    st.SkipWithError("codec unavailable");
    return;
  }
  PageEncoder enc(pol, codec_for(pol.codec), nullptr);
  constexpr size_t kMessages = 128;  // 64 MiB of pages
  std::vector<std::vector<uint8_t>> msgs(kMessages);
  std::vector<uint64_t> offsets(kPacketPages);
  for (size_t m = 0; m < kMessages; ++m) {
    for (size_t i = 0; i < kPacketPages; ++i) offsets[i] = (m * kPacketPages + i) * kPageSize;
    PacketView v;
    v.pages_alloc = kPacketPages;
    v.ramblock = "pc.ram";
    v.offsets = offsets;
    v.pages = c.data() + m * kPacketPages * kPageSize;
    msgs[m].resize(PageEncoder::max_message(kPacketPages));
    mm::wire::RecordWriter w(msgs[m]);
    enc.encode(v, 1, true, w);
    msgs[m].resize(w.size());
  }
  PageDecoder dec([](CodecKind k, std::string*) { return codec_for(k); });
  DecodedPacket out;
  size_t n = 0;
  for (auto _ : st) {
    if (n % kMessages == 0) {
      // The messages replay from the start: so does the dictionary (its
      // memory stays committed, as in a long-running stream).
      st.PauseTiming();
      dec.reset();
      st.ResumeTiming();
    }
    const std::string why = dec.decode(msgs[n++ % kMessages], out);
    if (!why.empty()) {
      st.SkipWithError(why.c_str());
      return;
    }
  }
  per_page(st, n * kPacketPages);
}

// PAGE_DELTA: packets of text pages that each differ from the stream's
// last version of them by 4 words (what memload.lines=4 writes), so every
// page goes as a delta. Arg 0: the source (PageEncoder: hash, dictionary
// miss, base lookup, delta, dictionary insert); 1: the destination
// (PageDecoder: base copy, words, hash check, insert). Per page, next to
// the pipelines above in the same run.
void BM_DeltaPipeline(benchmark::State& st) {
  constexpr size_t kCorpusPages = 512;
  constexpr size_t kPasses = 8;
  std::vector<uint8_t> c = mm::test::corpus(PageKind::text, kCorpusPages);
  // Pass p rewrites 4 words of every page with values of that pass: each
  // version is new (never a dedupe hit) and 4 words from the last one.
  auto rewrite = [&](size_t pass, size_t first, size_t n) {
    for (size_t i = first; i < first + n; ++i) {
      for (size_t k = 0; k < 4; ++k) {
        const uint64_t val = pass * 0x9E3779B97F4A7C15ull + i * 31 + k;
        std::memcpy(c.data() + i * kPageSize + 64 * (k * 13 + i % 7) + 8, &val, 8);
      }
    }
  };
  PagePolicy pol;
  pol.codec = CodecKind::lz4;
  pol.auto_codec = false;
  pol.dedupe_slots = 4096;
  Lz4Codec lz4;
  std::vector<uint64_t> offsets(kPacketPages);
  std::vector<uint8_t> msg(PageEncoder::max_message(kPacketPages));
  auto encode = [&](PageEncoder& enc, size_t pass, size_t packet, std::vector<uint8_t>& out) {
    for (size_t i = 0; i < kPacketPages; ++i) offsets[i] = (packet * kPacketPages + i) * kPageSize;
    PacketView pv;
    pv.pages_alloc = kPacketPages;
    pv.ramblock = "pc.ram";
    pv.offsets = offsets;
    pv.pages = c.data() + packet * kPacketPages * kPageSize;
    mm::wire::RecordWriter w(out);
    enc.encode(pv, uint32_t(pass), false, w);
    return w.size();
  };
  constexpr size_t kPackets = kCorpusPages / kPacketPages;
  if (st.range(0) == 0) {
    PageEncoder enc(pol, &lz4, nullptr);
    for (size_t k = 0; k < kPackets; ++k) encode(enc, 0, k, msg);  // the bases
    const PageStats before = enc.stats();
    size_t n = 0;
    for (auto _ : st) {
      const size_t pass = 1 + n / kPackets, packet = n % kPackets;
      rewrite(pass, packet * kPacketPages, kPacketPages);  // 512 stores: a few ns per page
      benchmark::DoNotOptimize(encode(enc, pass, packet, msg));
      ++n;
    }
    per_page(st, n * kPacketPages);
    const PageStats& s = enc.stats();
    st.counters["delta_share"] = double(s.delta - before.delta) / double(s.pages - before.pages);
    st.counters["wire_ratio"] = double(s.record_bytes - before.record_bytes) / double((s.pages - before.pages) * kPageSize);
    st.SetLabel("text, 4 words changed: source");
    return;
  }
  PageEncoder enc(pol, &lz4, nullptr);
  std::vector<std::vector<uint8_t>> msgs;
  for (size_t pass = 0; pass <= kPasses; ++pass) {
    if (pass > 0) rewrite(pass, 0, kCorpusPages);
    for (size_t k = 0; k < kPackets; ++k) {
      msgs.emplace_back(PageEncoder::max_message(kPacketPages));
      msgs.back().resize(encode(enc, pass, k, msgs.back()));
    }
  }
  PageDecoder dec([&](CodecKind, std::string*) -> PageCodec* { return &lz4; });
  DecodedPacket out;
  size_t n = 0, at = msgs.size();
  const uint64_t delta0 = 0;
  uint64_t pages_timed = 0, delta_timed = delta0;
  for (auto _ : st) {
    if (at == msgs.size()) {
      st.PauseTiming();  // replay from the start: the first pass fills the bases
      dec.reset();
      for (at = 0; at < kPackets; ++at) (void)dec.decode(msgs[at], out);
      st.ResumeTiming();
    }
    const uint64_t d0 = dec.stats().delta;
    const std::string why = dec.decode(msgs[at++], out);
    if (!why.empty()) {
      st.SkipWithError(why.c_str());
      return;
    }
    delta_timed += dec.stats().delta - d0;
    pages_timed += kPacketPages;
    ++n;
  }
  per_page(st, n * kPacketPages);
  st.counters["delta_share"] = pages_timed ? double(delta_timed) / double(pages_timed) : 0;
  st.SetLabel("text, 4 words changed: destination");
}

void pipelines(benchmark::internal::Benchmark* b) {
  for (int k = 0; k <= int(PageKind::mix); ++k) b->Args({k, int(CodecKind::lz4)});
  b->Args({int(PageKind::mix), int(CodecKind::raw)});
  b->Args({int(PageKind::mix), int(CodecKind::zstd)});
  b->Args({int(PageKind::mix), int(CodecKind::deflate)});
}

void corpora(benchmark::internal::Benchmark* b) {
  for (int k = 0; k <= int(PageKind::mix); ++k) b->Arg(k);
}
}  // namespace

BENCHMARK(BM_MemcpyPage)->Apply(corpora);
BENCHMARK(BM_ZeroCheck)->Apply(corpora);
BENCHMARK(BM_Hash)->Arg(int(PageKind::random));
BENCHMARK(BM_DedupeLookup);
BENCHMARK(BM_Lz4Compress)->Apply(corpora);
BENCHMARK(BM_Lz4Decompress)->Arg(int(PageKind::text))->Arg(int(PageKind::code))->Arg(int(PageKind::mix));
BENCHMARK(BM_ZstdCompress)->Apply(corpora);
BENCHMARK(BM_ZstdDecompress)->Arg(int(PageKind::text))->Arg(int(PageKind::code))->Arg(int(PageKind::mix));
BENCHMARK(BM_DeflateCompressdevCompress)->Arg(int(PageKind::text))->Arg(int(PageKind::mix));
BENCHMARK(BM_DeflateCompressdevDecompress)->Arg(int(PageKind::text))->Arg(int(PageKind::mix));
BENCHMARK(BM_SourcePipeline)->Apply(pipelines);
BENCHMARK(BM_DestinationPipeline)->Apply(pipelines);
BENCHMARK(BM_DeltaPipeline)->Arg(0)->Arg(1);

int main(int argc, char** argv) {
  try {
    mm::port::init_eal({"pages_bench", "--no-huge", "-m", "256", "--no-pci", "--no-telemetry",
                        "--log-level=warning", "--file-prefix=mm-pb-" + std::to_string(getpid()),
                        "--vdev=compress_isal0"});
    g_deflate = std::make_unique<CompressdevDeflate>("compress_isal0");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "DEFLATE through compressdev unavailable: %s\n", e.what());
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_deflate.reset();
  return 0;
}
