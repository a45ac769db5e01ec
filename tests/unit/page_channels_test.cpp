// Proves the page path of a multifd channel end to end without QEMU or EAL:
// QEMU 7.2 multifd bytes read by the source's MultifdSource (through its
// read cursor, however the bytes are split), queued straight into stream
// slots, carried by two in-memory transport connections, checked and
// rebuilt by the destination's MultifdRebuilder and written to "QEMU" as
// parts (with a small socket buffer: partial writes, the rest buffered)
// come out byte-identical; a source channel that is only read has no out
// buffer; and in steady state neither side allocates.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

#include "Loopback.hpp"
#include "PageCorpus.hpp"
#include "dataplane/engine/PageChannels.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"

#include "AllocationCounter.hpp"

using namespace mm;
using mm::test::PageKind;

namespace {

// A QEMU 7.2 multifd channel: MultiFDInit, then packets of `pages` pages
// (pages_alloc 128) from the mix corpus, a SYNC every 8th.
std::vector<uint8_t> qemu_channel(size_t packets, uint32_t pages, uint64_t seed = 1) {
  std::vector<uint8_t> out(qemu::kMultifdInitSize);
  qemu::MultifdInit init;
  init.id = 0;
  qemu::encode_multifd_init(init, std::span<uint8_t, qemu::kMultifdInitSize>(out.data(), qemu::kMultifdInitSize));
  for (size_t k = 0; k < packets; ++k) {
    qemu::MultifdPacketHeader h;
    h.flags = k % 8 == 7 ? qemu::multifd_flag::sync : 0;
    h.pages_alloc = 128;
    h.normal_pages = pages;
    h.next_packet_size = pages * qemu::kTargetPageSize;
    h.packet_num = k;
    h.ramblock = "pc.ram";
    for (uint32_t i = 0; i < pages; ++i) h.offsets.push_back((k * pages + i) * qemu::kTargetPageSize);
    const auto hb = qemu::encode_multifd_header(h);
    out.insert(out.end(), hb.begin(), hb.end());
    const size_t at = out.size();
    out.resize(at + size_t(pages) * qemu::kTargetPageSize);
    for (uint32_t i = 0; i < pages; ++i) {
      mm::test::fill_page(out.data() + at + i * qemu::kTargetPageSize, PageKind::mix, seed * 100000 + k * pages + i);
    }
  }
  return out;
}

// One QEMU 7.2 packet of a channel built by qemu_packets().
struct QemuPacket {
  uint64_t num;
  uint32_t flags;
  uint32_t pages;
  uint32_t next_packet_size;  // QEMU leaves a stale one in packets without pages
};

// The given packets (pages from the mix corpus), after a MultiFDInit when
// `init`.
std::vector<uint8_t> qemu_packets(std::initializer_list<QemuPacket> packets, bool init = true) {
  std::vector<uint8_t> out;
  if (init) {
    out.resize(qemu::kMultifdInitSize);
    qemu::MultifdInit mi;
    qemu::encode_multifd_init(
        mi, std::span<uint8_t, qemu::kMultifdInitSize>(out.data(), qemu::kMultifdInitSize));
  }
  for (const QemuPacket& q : packets) {
    qemu::MultifdPacketHeader h;
    h.flags = q.flags;
    h.pages_alloc = 128;
    h.normal_pages = q.pages;
    h.next_packet_size = q.next_packet_size;
    h.packet_num = q.num;
    h.ramblock = "pc.ram";
    for (uint32_t i = 0; i < q.pages; ++i)
      h.offsets.push_back((q.num * 128 + i) * qemu::kTargetPageSize);
    const auto hb = qemu::encode_multifd_header(h);
    out.insert(out.end(), hb.begin(), hb.end());
    const size_t at = out.size();
    out.resize(at + size_t(q.pages) * qemu::kTargetPageSize);
    for (uint32_t i = 0; i < q.pages; ++i) {
      mm::test::fill_page(out.data() + at + i * qemu::kTargetPageSize, PageKind::mix,
                          q.num * 1000 + i);
    }
  }
  return out;
}

struct PagePath {
  // port_buffers: the source's send window in separate port buffers (as
  // with mbufs): page messages are written across slots.
  explicit PagePath(pages::PagePolicy pol, int dst_sndbuf = 0, bool port_buffers = false)
      : codecs(""),
        source(0, pol, codecs.get(pol.codec, nullptr), nullptr, 1 << 20,
               pol.auto_codec ? codecs.get(pages::CodecKind::zstd, nullptr) : nullptr),
        src_relay(0),
        dst_relay(5 << 20),
        rebuilder(&codecs),
        lb(1, 1 << 20, port_buffers) {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, qin), 0);
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, qout), 0);
    if (dst_sndbuf) ::setsockopt(qout[0], SOL_SOCKET, SO_SNDBUF, &dst_sndbuf, sizeof dst_sndbuf);
    src_relay.attach(qin[1]);
    dst_relay.attach(qout[0]);
  }
  ~PagePath() {
    ::close(qin[0]);
    if (qout[1] >= 0) ::close(qout[1]);
  }
  // The destination QEMU shuts its side of the channel (multifd_load_cleanup).
  void qemu_closes() {
    ::close(qout[1]);
    qout[1] = -1;
  }
  // One step like step(), but the destination side may fail: its verdict.
  bool step_dst(size_t chunk) {
    if (fed < input.size()) {
      const ssize_t w = ::write(qin[0], input.data() + fed, std::min(chunk, input.size() - fed));
      if (w > 0) fed += size_t(w);
    }
    bool work = false;
    EXPECT_TRUE(source.pump(src_relay, lb.a.sender(0), {}, work)) << source.error();
    lb.step(++now);
    return rebuilder.pump(lb.b.receiver(0), dst_relay);
  }
  // Writes at most `chunk` more input bytes, moves everything one step,
  // reads up to `read_max` output bytes.
  void step(size_t chunk, size_t read_max = SIZE_MAX) {
    if (fed < input.size()) {
      const ssize_t w = ::write(qin[0], input.data() + fed, std::min(chunk, input.size() - fed));
      if (w > 0) fed += size_t(w);
    }
    bool work = false;
    if (counting) test::AllocationCounter::resume();
    ASSERT_TRUE(source.pump(src_relay, lb.a.sender(0), {}, work)) << source.error();
    test::AllocationCounter::pause();
    lb.step(++now);
    if (counting) test::AllocationCounter::resume();
    ASSERT_TRUE(rebuilder.pump(lb.b.receiver(0), dst_relay)) << rebuilder.error();
    test::AllocationCounter::pause();
    uint8_t buf[65536];
    while (read_max > 0 && qout[1] >= 0) {
      const ssize_t r = ::read(qout[1], buf, std::min(sizeof buf, read_max));
      if (r <= 0) break;
      output.insert(output.end(), buf, buf + r);
      read_max -= size_t(r);
    }
  }
  // Runs until all input came out (or nothing moves for a long while).
  void run(size_t chunk, size_t read_max = SIZE_MAX) {
    size_t idle = 0, last = 0;
    while (output.size() < input.size() && idle < 20000) {
      step(chunk, read_max);
      if (::testing::Test::HasFatalFailure()) return;
      idle = output.size() == last ? idle + 1 : 0;
      last = output.size();
    }
  }

  engine::CodecSet codecs;
  engine::MultifdSource source;
  qemu::ChannelRelay src_relay, dst_relay;
  engine::MultifdRebuilder rebuilder;
  test::Loopback lb;
  int qin[2], qout[2];
  std::vector<uint8_t> input, output;
  size_t fed = 0;
  uint64_t now = 0;
  bool counting = false;
};

void expect_identical(const PagePath& p) {
  ASSERT_EQ(p.output.size(), p.input.size());
  for (size_t i = 0; i < p.input.size(); ++i) {
    ASSERT_EQ(p.output[i], p.input[i]) << "first difference at byte " << i;
  }
}

}  // namespace

TEST(PageChannels, PacketsSplitAtEveryByteBoundaryComeOutIdentical) {
  // One byte at a time, pumped after each: every split point of the
  // MultiFDInit, the headers and the pages is a read boundary once.
  pages::PagePolicy pol;
  PagePath p(pol);
  p.input = qemu_channel(3, 2);
  p.run(1);
  expect_identical(p);
  EXPECT_EQ(p.source.stats().packets, 3u);
  EXPECT_EQ(p.rebuilder.stats().verified + p.rebuilder.stats().zero, 6u);
}

TEST(PageChannels, ReleasePacketIsAnEmptySyncAfterTheLastRebuiltPacket) {
  // What a failed destination session ends a multifd channel with: a SYNC
  // packet with no pages, numbered after the channel's last packet, in
  // the header size QEMU reads; nothing before the init was taken.
  pages::PagePolicy pol;
  PagePath p(pol);
  EXPECT_TRUE(p.rebuilder.release_packet(p.dst_relay).empty()) << "nothing taken yet";
  p.input = qemu_channel(3, 2);
  p.run(4096);
  expect_identical(p);
  const std::span<const uint8_t> sync = p.rebuilder.release_packet(p.dst_relay);
  qemu::MultifdPacketHeader h;
  ASSERT_EQ(qemu::parse_multifd_header(sync, h), qemu::MultifdError::ok);
  EXPECT_EQ(sync.size(), h.header_size());
  EXPECT_EQ(h.flags, qemu::multifd_flag::sync);
  EXPECT_EQ(h.pages_alloc, 128u);
  EXPECT_EQ(h.normal_pages, 0u);
  EXPECT_EQ(h.payload_size(), 0u);
  EXPECT_EQ(h.packet_num, 3u);
}

TEST(PageChannels, ReleasePacketAfterTheInitAloneAndNotInsideOne) {
  pages::PagePolicy pol;
  {
    PagePath p(pol);
    p.input = qemu_channel(0, 0);  // the init only
    p.run(4096);
    expect_identical(p);
    const std::span<const uint8_t> sync = p.rebuilder.release_packet(p.dst_relay);
    qemu::MultifdPacketHeader h;
    ASSERT_EQ(qemu::parse_multifd_header(sync, h), qemu::MultifdError::ok);
    EXPECT_EQ(h.pages_alloc, 128u);
    EXPECT_EQ(h.packet_num, 1u);
  }
  {
    PagePath p(pol);
    p.input = qemu_channel(0, 0);
    p.input.resize(p.input.size() / 2);  // half an init reached QEMU
    p.run(4096);
    EXPECT_TRUE(p.rebuilder.release_packet(p.dst_relay).empty());
  }
}

TEST(PageChannels, AnEmptyPacketAfterTheLastSyncIsNotWrittenToAQemuThatHasClosedTheChannel) {
  // The end of QEMU 7.2's multifd channel 0 as captured from a real
  // migration (fuzz/corpus/fuzz_multifd/qemu-channel0): the last SYNC #11
  // carries 4 pages and is followed by #11 without pages or flags
  // (QEMU-7.2-STREAM.md, "An empty packet after a SYNC"). The destination
  // QEMU that read its last SYNC loads the device state and shuts the
  // channel (multifd_load_cleanup); the empty packet arriving after that
  // must not fail the channel of a migration that has completed.
  pages::PagePolicy pol;
  PagePath p(pol);
  const uint32_t s = qemu::multifd_flag::sync;
  p.input = qemu_packets({{1, s, 0, 0}, {8, s, 2, 8192}, {11, s, 4, 16384}});
  p.run(4096);
  expect_identical(p);
  p.qemu_closes();
  const std::vector<uint8_t> trailer = qemu_packets({{11, 0, 0, 16384}}, /*init=*/false);
  const size_t needed = p.input.size();
  p.input.insert(p.input.end(), trailer.begin(), trailer.end());
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(p.step_dst(4096)) << p.rebuilder.error();
  }
  EXPECT_EQ(p.fed, p.input.size());
  EXPECT_EQ(p.source.stats().packets, 4u);
  EXPECT_EQ(p.rebuilder.dropped_empty(), 1u);
  EXPECT_EQ(p.dst_relay.bytes_taken_for_qemu(), needed) << "nothing written after the last SYNC";
}

TEST(PageChannels, PacketsWithNeitherPagesNorSyncAreLeftOut) {
  // The whole captured channel: #8 without pages or flags also follows
  // SYNC #8. QEMU does nothing with such packets, so they are not written
  // (counted); everything else comes out as QEMU sent it.
  pages::PagePolicy pol;
  PagePath p(pol);
  const uint32_t s = qemu::multifd_flag::sync;
  p.input = qemu_packets(
      {{1, s, 0, 0}, {8, s, 2, 8192}, {8, 0, 0, 8192}, {11, s, 4, 16384}, {11, 0, 0, 16384}});
  const std::vector<uint8_t> needed =
      qemu_packets({{1, s, 0, 0}, {8, s, 2, 8192}, {11, s, 4, 16384}});
  for (size_t idle = 0; (p.output.size() < needed.size() || p.fed < p.input.size()) && idle < 2000;
       ++idle) {
    p.step(4096);
    ASSERT_FALSE(HasFatalFailure());
  }
  for (int i = 0; i < 20; ++i) p.step(4096);
  EXPECT_EQ(p.output, needed);
  EXPECT_EQ(p.source.stats().packets, 5u);
  EXPECT_EQ(p.rebuilder.dropped_empty(), 2u);
}

TEST(PageChannels, AQemuThatClosesTheChannelBeforeItHasItsSyncFailsIt) {
  // The other side of the rule: a packet QEMU needs (here the SYNC its
  // main thread waits for) that cannot be written fails the channel, and
  // the reason says what the channel had last been given.
  pages::PagePolicy pol;
  PagePath p(pol);
  const uint32_t s = qemu::multifd_flag::sync;
  p.input = qemu_packets({{1, s, 0, 0}, {8, 0, 2, 8192}});
  p.run(4096);
  expect_identical(p);
  p.qemu_closes();
  const std::vector<uint8_t> rest = qemu_packets({{11, s, 4, 16384}}, /*init=*/false);
  p.input.insert(p.input.end(), rest.begin(), rest.end());
  bool ok = true;
  for (int i = 0; i < 200 && ok; ++i) ok = p.step_dst(4096);
  ASSERT_FALSE(ok) << "a SYNC written into a closed channel";
  const std::string& e = p.rebuilder.error();
  EXPECT_NE(e.find("write to QEMU"), std::string::npos) << e;
  EXPECT_NE(e.find("last #11 flags 0x1 4 pages, before it #8 flags 0x0 2 pages"), std::string::npos)
      << e;
}

TEST(PageChannels, MessagesWrittenAcrossSeparatePortBuffersComeOutIdentical) {
  // Each window slot its own buffer (mbufs): records straddle slots.
  for (auto codec : {pages::CodecKind::raw, pages::CodecKind::lz4}) {
    pages::PagePolicy pol;
    pol.codec = codec;
    PagePath p(pol, 0, true);
    ASSERT_TRUE(p.lb.a.sender(0).zero_copy() || p.lb.a.sender(0).unacked() == 0);
    p.input = qemu_channel(20, 128, 9);
    p.run(1 << 20);
    expect_identical(p);
    EXPECT_TRUE(p.lb.a.sender(0).zero_copy());
    EXPECT_EQ(p.source.stats().packets, 20u);
  }
}

TEST(PageChannels, FullPacketsInRandomChunksMoveThroughTheCursorBuffer) {
  // Many full packets in chunks of every size: the cursor wraps the input
  // buffer (its tail moved to the front) many times.
  for (pages::CodecKind codec : {pages::CodecKind::raw, pages::CodecKind::lz4, pages::CodecKind::zstd}) {
    pages::PagePolicy pol;
    pol.codec = codec;
    PagePath p(pol);
    p.input = qemu_channel(24, 128, uint64_t(codec) + 1);
    std::mt19937 rng{uint32_t(codec)};
    size_t idle = 0, last = 0;
    while (p.output.size() < p.input.size() && idle < 20000) {
      p.step(1 + rng() % 300000);
      ASSERT_FALSE(HasFatalFailure());
      idle = p.output.size() == last ? idle + 1 : 0;
      last = p.output.size();
    }
    expect_identical(p);
    EXPECT_EQ(p.source.stats().packets, 24u) << to_string(codec);
    EXPECT_EQ(p.rebuilder.stats().written, 24u * 128);
  }
}

TEST(PageChannels, RebuiltPacketsSurvivePartialWritesToASmallSocketBuffer) {
  // The destination socket takes a few KiB at a time: each rebuilt packet
  // is written partly from its parts and the rest from the out buffer, in
  // order, while new packets wait until the buffer has room.
  pages::PagePolicy pol;
  pol.codec = pages::CodecKind::lz4;
  PagePath p(pol, 4096);
  p.input = qemu_channel(12, 128, 9);
  p.run(1 << 20, 3000);
  expect_identical(p);
  EXPECT_GT(p.dst_relay.bytes_to_qemu(), 0u);
}

TEST(PageChannels, SourceMultifdChannelHasNoOutBufferAndRefusesBytesForIt) {
  qemu::ChannelRelay r(0);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  r.attach(sv[0]);
  EXPECT_EQ(r.channel()->out_capacity(), 0u);
  test::Loopback lb(1);
  uint8_t msg[16];
  wire::RecordWriter w(msg);
  const uint8_t data[3] = {1, 2, 3};
  w.put_bytes(data);
  ASSERT_TRUE(lb.b.sender(0).submit_message({msg, w.size()}));
  for (int i = 0; i < 4; ++i) lb.step(uint64_t(i + 1));
  EXPECT_FALSE(r.pump_out(lb.a.receiver(0)));
  EXPECT_NE(r.error().find("only read"), std::string::npos) << r.error();
  ::close(sv[1]);
}

TEST(PageChannels, SteadyStateAllocatesNothingOnEitherSide) {
  for (pages::CodecKind codec : {pages::CodecKind::raw, pages::CodecKind::lz4, pages::CodecKind::zstd}) {
    pages::PagePolicy pol;
    pol.codec = codec;
    pol.dedupe_slots = 1024;
    PagePath p(pol);
    p.input = qemu_channel(40, 128, 3);
    // Warm-up: the first packets size every buffer once.
    while (p.output.size() < p.input.size() / 4) {
      p.step(1 << 20);
      ASSERT_FALSE(HasFatalFailure());
    }
    test::AllocationCounter::start();
    test::AllocationCounter::pause();
    p.counting = true;
    p.run(1 << 20);
    p.counting = false;
    const uint64_t allocs = test::AllocationCounter::stop();
    expect_identical(p);
    EXPECT_EQ(allocs, 0u) << to_string(codec) << ": allocations in MultifdSource::pump / MultifdRebuilder::pump";
  }
}

TEST(PageChannels, EncoderAndDecoderAllocateNothingPerPacket) {
  pages::Lz4Codec lz4;
  pages::PagePolicy pol;
  pol.dedupe_slots = 512;
  for (bool in_place : {false, true}) {
    pages::PageEncoder enc(pol, &lz4, nullptr);
    pages::PageDecoder dec([&](pages::CodecKind, std::string*) -> pages::PageCodec* { return &lz4; }, in_place);
    pages::DecodedPacket d;
    std::vector<uint8_t> msg(pages::PageEncoder::max_message(128));
    auto corpus = mm::test::corpus(PageKind::mix, 128 * 8);
    std::vector<uint64_t> off(128);
    for (int round = 0; round < 16; ++round) {
      if (round == 4) test::AllocationCounter::start();
      const size_t k = size_t(round) % 8;
      for (size_t i = 0; i < 128; ++i) off[i] = (k * 128 + i) * pages::kPageSize;
      pages::PacketView v;
      v.pages_alloc = 128;
      v.ramblock = "a-ramblock-name-longer-than-sso";
      v.offsets = off;
      v.pages = corpus.data() + k * 128 * pages::kPageSize;
      wire::RecordWriter w(msg);
      enc.encode(v, 1, true, w);
      const std::string why = dec.decode({msg.data(), w.size()}, d);
      test::AllocationCounter::pause();
      ASSERT_EQ(why, "");
      if (round >= 4) test::AllocationCounter::resume();
    }
    EXPECT_EQ(test::AllocationCounter::stop(), 0u) << (in_place ? "in place" : "materialized");
  }
}

TEST(PageChannels, AutoCodecShrinksHarderOnlyWhileTheLinkHoldsTheFlow) {
  pages::PagePolicy pol;  // the default: auto (LZ4, zstd when link-bound)
  ASSERT_TRUE(pol.auto_codec);
  PagePath p(pol);
  p.input = qemu_channel(60, 128, 3);
  // CPU-bound: everything QEMU wrote is read and the fabric takes it all
  // at once: LZ4 throughout.
  p.run(1 << 20);
  expect_identical(p);
  EXPECT_EQ(p.source.stats().auto_heavy_packets, 0u);

  // Link-bound: the pacer holds the flow (50 MB/s; 100 us per step), so
  // packets wait to be transmitted when the next one is taken.
  PagePath q(pol);
  q.input = qemu_channel(60, 128, 3);
  q.lb.a.set_max_bandwidth(50'000'000);
  for (size_t steps = 0; q.output.size() < q.input.size() && steps < 200000; ++steps) {
    if (q.fed < q.input.size()) {  // QEMU keeps its socket full
      const ssize_t w = ::write(q.qin[0], q.input.data() + q.fed, q.input.size() - q.fed);
      if (w > 0) q.fed += size_t(w);
    }
    bool work = false;
    ASSERT_TRUE(q.source.pump(q.src_relay, q.lb.a.sender(0), {}, work)) << q.source.error();
    q.now += 100'000;
    q.lb.step(q.now);
    ASSERT_TRUE(q.rebuilder.pump(q.lb.b.receiver(0), q.dst_relay)) << q.rebuilder.error();
    uint8_t buf[65536];
    for (ssize_t r; (r = ::read(q.qout[1], buf, sizeof buf)) > 0;) q.output.insert(q.output.end(), buf, buf + r);
  }
  expect_identical(q);
  EXPECT_GT(q.source.stats().auto_heavy_packets, 40u);
  EXPECT_GE(q.source.stats().auto_switches, 1u);
  EXPECT_LT(q.source.stats().record_bytes, p.source.stats().record_bytes);  // zstd shrinks more
}
