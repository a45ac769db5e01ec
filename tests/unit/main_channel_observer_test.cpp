// Proves the main-channel observer reads a QEMU 7.2 main channel the same
// whatever way it is split: the configuration (with subsections), commands,
// the RAM section's setup, ZERO / PAGE records with and without CONTINUE,
// EOS markers and footers; that it stops at device state with a reason;
// and that malformed or hostile bytes make it stop (never crash, never
// report a wrong page).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "dataplane/qemu/MainChannelObserver.hpp"

using mm::qemu::MainChannelObserver;

namespace {

struct Events : MainChannelObserver::Sink {
  std::vector<std::string> log;
  void on_zero_page(std::string_view b, uint64_t off) override { log.push_back("zero " + std::string(b) + " " + std::to_string(off)); }
  void on_page(std::string_view b, uint64_t off) override { log.push_back("page " + std::string(b) + " " + std::to_string(off)); }
  void on_eos(uint64_t n) override { log.push_back("eos " + std::to_string(n)); }
  void on_opaque(std::string_view why) override { log.push_back("opaque " + std::string(why)); }
};

struct Stream {
  std::vector<uint8_t> b;
  Stream& u8(uint8_t v) { b.push_back(v); return *this; }
  Stream& be16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Stream& be32(uint32_t v) { return be16(uint16_t(v >> 16)).be16(uint16_t(v)); }
  Stream& be64(uint64_t v) { return be32(uint32_t(v >> 32)).be32(uint32_t(v)); }
  Stream& str8(const std::string& s) {
    u8(uint8_t(s.size()));
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Stream& bytes(size_t n, uint8_t v) {
    b.insert(b.end(), n, v);
    return *this;
  }
  Stream& header() { return be32(0x5145564d).be32(3); }
  Stream& configuration() {
    const std::string machine = "pc-q35-7.2";
    u8(0x07).be32(uint32_t(machine.size()));
    b.insert(b.end(), machine.begin(), machine.end());
    u8(0x05).str8("configuration/capabilities").be32(1).be32(2).str8("x-ignore-shared").str8("multifd");
    u8(0x05).str8("configuration/uuid").be32(1).bytes(16, 0xAB);
    return *this;
  }
  Stream& command(uint16_t cmd, uint16_t len) { return u8(0x08).be16(cmd).be16(len).bytes(len, 0x11); }
  Stream& start(uint32_t id, const std::string& name) { return u8(0x01).be32(id).str8(name).be32(0).be32(4); }
  Stream& part(uint32_t id) { return u8(0x02).be32(id); }
  Stream& end(uint32_t id) { return u8(0x03).be32(id); }
  Stream& footer(uint32_t id) { return u8(0x7e).be32(id); }
  Stream& eos() { return be64(0x10); }
};

// A realistic stream: header, configuration, return path commands, the RAM
// setup (two blocks, x-ignore-shared: with GPAs), two PARTs, the END, then
// device state.
std::vector<uint8_t> sample() {
  Stream s;
  s.header().configuration().command(1, 0).command(2, 4);
  s.start(2, "ram").be64((0x10000000ull + 0x20000) | 0x04);
  s.str8("pc.ram").be64(0x10000000).be64(0);
  s.str8("vga.vram").be64(0x20000).be64(0xfd000000);
  s.eos().footer(2);
  s.part(2);
  s.be64(0x1000 | 0x02).str8("pc.ram").u8(0);          // zero page, named block
  s.be64(0x2000 | 0x02 | 0x20).u8(0);                   // zero page, CONTINUE
  s.be64(0x3000 | 0x08 | 0x20).bytes(4096, 0x5A);        // raw page, CONTINUE
  s.be64(0x10000 | 0x08).str8("vga.vram").bytes(4096, 1);  // raw page, other block
  s.be64(0x200);                                          // MULTIFD_FLUSH (8.1+)
  s.eos().footer(2);
  s.part(2).eos().footer(2);
  s.end(2).be64(0x4000 | 0x02).str8("pc.ram").u8(0).eos().footer(2);
  s.u8(0x04).be32(3).str8("timer").be32(0).be32(2).bytes(40, 0);  // FULL device state
  return s.b;
}

const std::vector<std::string> kExpected = {
    "eos 1",
    "zero pc.ram 4096",
    "zero pc.ram 8192",
    "page pc.ram 12288",
    "page vga.vram 65536",
    "eos 2",
    "eos 3",
    "zero pc.ram 16384",
    "eos 4",
    "opaque device state of 'timer' (not self-delimiting)",
};

}  // namespace

TEST(MainChannelObserver, ReadsARealisticStreamWholeOrInAnyPieces) {
  const auto s = sample();
  {
    Events e;
    MainChannelObserver o(e);
    o.feed(s);
    EXPECT_EQ(e.log, kExpected);
    EXPECT_EQ(o.eos_count(), 4u);
    EXPECT_EQ(o.zero_records(), 3u);
    EXPECT_EQ(o.page_records(), 2u);
    EXPECT_EQ(o.multifd_flushes(), 1u);
    EXPECT_EQ(o.machine(), "pc-q35-7.2");
    EXPECT_TRUE(o.sync_before_each_eos());
    EXPECT_TRUE(o.opaque());
    EXPECT_EQ(o.bytes_seen(), s.size());
  }
  {
    Events e;
    MainChannelObserver o(e);
    for (uint8_t byte : s) o.feed({&byte, 1});
    EXPECT_EQ(e.log, kExpected);
    EXPECT_EQ(o.machine(), "pc-q35-7.2");
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    Events e;
    MainChannelObserver o(e);
    for (size_t at = 0; at < s.size();) {
      const size_t n = std::min(s.size() - at, size_t(1 + rng() % 5000));
      o.feed({s.data() + at, n});
      at += n;
    }
    EXPECT_EQ(e.log, kExpected) << round;
  }
}

TEST(MainChannelObserver, StopsWithAReasonOnWhatItCannotRead) {
  auto first_opaque = [](const std::vector<uint8_t>& bytes) {
    Events e;
    MainChannelObserver o(e);
    o.feed(bytes);
    EXPECT_TRUE(o.opaque());
    return o.opaque_reason();
  };
  EXPECT_NE(first_opaque(Stream().be32(0x5145564d).be32(2).b).find("not a QEMU migration stream"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().be32(0xdeadbeef).be32(3).b).find("not a QEMU migration stream"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().u8(0x07).be32(100000).b).find("machine name"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().u8(0x07).be32(0).u8(0x05).str8("configuration/x").be32(1).b).find("not known"),
            std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().command(7, 4).b).find("packaged"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().start(1, "block").b).find("iterative section 'block'"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().part(9).b).find("not RAM"), std::string::npos);
  EXPECT_NE(first_opaque(Stream().header().u8(0x42).b).find("unknown section type"), std::string::npos);
  // RAM records it must not guess at.
  auto ram = [] { return Stream().header().start(5, "ram"); };
  EXPECT_NE(first_opaque(ram().be64(0x1000 | 0x40 | 0x20).b).find("XBZRLE"), std::string::npos);
  EXPECT_NE(first_opaque(ram().be64(0x1000 | 0x100).b).find("compressed page"), std::string::npos);
  EXPECT_NE(first_opaque(ram().be64(0x1000 | 0x02 | 0x08).b).find("not one record type"), std::string::npos);
  EXPECT_NE(first_opaque(ram().be64(0x1000 | 0x02 | 0x20).b).find("never named"), std::string::npos);
  EXPECT_NE(first_opaque(ram().be64(0x1000 | 0x02).u8(0).b).find("empty block name"), std::string::npos);
  EXPECT_NE(first_opaque(ram().be64(0x2000 | 0x04).str8("pc.ram").be64(0x3000).b).find("do not add up"),
            std::string::npos);
  // Postcopy setup: block page sizes may follow; not guessed.
  EXPECT_NE(first_opaque(Stream().header().command(3, 16).start(5, "ram").be64(0x2000 | 0x04).b).find("postcopy"),
            std::string::npos);
}

// fuzz_main_channel found it: the reason named the end of the chunk being
// fed as the unknown byte's offset, so the same stream split differently
// gave a different reason. It names the byte itself now.
TEST(MainChannelObserver, ReasonNamesTheSameByteHoweverTheStreamIsSplit) {
  const auto s = Stream().header().u8(0x42).bytes(100, 0).b;
  Events whole, bytewise;
  MainChannelObserver a(whole), b(bytewise);
  a.feed(s);
  for (uint8_t x : s) b.feed({&x, 1});
  EXPECT_EQ(a.opaque_reason(), b.opaque_reason());
  EXPECT_NE(a.opaque_reason().find("unknown section type 0x42 at byte 8"), std::string::npos) << a.opaque_reason();
  EXPECT_EQ(whole.log, bytewise.log);
}

TEST(MainChannelObserver, TruncatedStreamsReportOnlyWhatWasComplete) {
  const auto s = sample();
  for (size_t n = 0; n < s.size(); n += 97) {
    Events e;
    MainChannelObserver o(e);
    o.feed({s.data(), n});
    ASSERT_LE(e.log.size(), kExpected.size());
    for (size_t i = 0; i < e.log.size(); ++i) EXPECT_EQ(e.log[i], kExpected[i]) << n;
  }
}

TEST(MainChannelObserver, RandomBytesNeverCrashIt) {
  std::mt19937_64 rng(3);
  const auto good = sample();
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> bad = good;
    for (int f = 0; f < 1 + int(rng() % 6); ++f) bad[rng() % bad.size()] = uint8_t(rng());
    Events e;
    MainChannelObserver o(e);
    o.feed(bad);
    // Every zero/page it reported names a page-aligned offset.
    for (const auto& line : e.log) {
      if (line.rfind("zero ", 0) == 0 || line.rfind("page ", 0) == 0) {
        EXPECT_EQ(std::stoull(line.substr(line.rfind(' ') + 1)) % 4096, 0u) << line;
      }
    }
  }
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> junk(1 + rng() % 20000);
    for (auto& b : junk) b = uint8_t(rng());
    Events e;
    MainChannelObserver o(e);
    o.feed(junk);
    EXPECT_TRUE(o.opaque());
  }
}

// Whether RAM EOS markers order the multifd SYNCs (the unchanged filter's
// epochs) follows from the machine type: versioned up to 8.0 yes; 8.1+,
// unversioned or unreadable names no.
TEST(MainChannelObserver, KnowsWhichMachineTypesSyncBeforeEveryEos) {
  const std::vector<std::pair<std::string, bool>> cases = {
      {"pc-i440fx-7.2", true}, {"pc-q35-8.0", true}, {"pc-q35-2.12", true}, {"s390-ccw-virtio-7.1", true},
      {"pc-q35-8.1", false},   {"pc-i440fx-9.2", false}, {"pc-q35-10.0", false}, {"microvm", false},
      {"none", false},         {"pc-q35-", false},       {"pc-q35-7.", false},    {"pc-q35-.2", false},
      {"pc-q35-7.x", false},   {"pc-q35-4294967296.0", false}, {"", false}};
  for (const auto& [name, want] : cases) {
    Stream s;
    s.header().u8(0x07).be32(uint32_t(name.size()));
    s.b.insert(s.b.end(), name.begin(), name.end());
    s.u8(0x08).be16(1).be16(0);  // a command: the configuration ended
    Events e;
    MainChannelObserver o(e);
    for (uint8_t byte : s.b) o.feed({&byte, 1});
    EXPECT_FALSE(o.opaque()) << name << ": " << o.opaque_reason();
    EXPECT_EQ(o.machine(), name);
    EXPECT_EQ(o.sync_before_each_eos(), want) << name;
  }
  Events e;
  MainChannelObserver o(e);
  EXPECT_FALSE(o.sync_before_each_eos()) << "before the configuration";
}

TEST(MainChannelObserver, ReadsThePostcopyPreemptChannelsBareRecords) {
  // QEMU 7.2's preempt channel: RAM records only, no header or sections;
  // an EOS ends a burst, not the parsing; setup records are refused.
  Stream s;
  s.be64(0x5000 | 0x08).str8("pc.ram").bytes(4096, 7);  // requested page, named block
  s.be64(0x6000 | 0x02 | 0x20).u8(0);                     // zero page, CONTINUE
  s.eos();
  s.be64(0x7000 | 0x08 | 0x20).bytes(4096, 9);
  for (size_t piece : {s.b.size(), size_t(1), size_t(3), size_t(4097)}) {
    Events ev;
    MainChannelObserver o(ev, MainChannelObserver::Kind::preempt);
    for (size_t at = 0; at < s.b.size(); at += piece) {
      o.feed({s.b.data() + at, std::min(piece, s.b.size() - at)});
    }
    EXPECT_EQ(ev.log, (std::vector<std::string>{"page pc.ram 20480", "zero pc.ram 24576", "eos 1", "page pc.ram 28672"}))
        << "pieces of " << piece;
    EXPECT_FALSE(o.opaque());
  }
  Events ev;
  MainChannelObserver o(ev, MainChannelObserver::Kind::preempt);
  Stream setup;
  setup.be64(0x1000 | 0x04);
  o.feed(setup.b);
  EXPECT_TRUE(o.opaque());
  EXPECT_EQ(o.opaque_reason(), "RAM setup record on the postcopy-preempt channel");
  // A main-channel observer does not take bare records: it wants the header.
  Events main_ev;
  MainChannelObserver m(main_ev);
  m.feed(s.b);
  EXPECT_TRUE(m.opaque());
}
