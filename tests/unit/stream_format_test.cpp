// The QEMU 7.2 stream format behind the StreamFormat seam
// (dataplane/qemu/StreamFormat.hpp): what the engine learns through it
// agrees with the 7.2 layout (dataplane/qemu/QEMU-7.2-STREAM.md), and it
// refuses what no 7.2 packet has. Real QEMU bytes go through it in
// e2e_multifd_parser_on_real_qemu and every multifd e2e migration.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "dataplane/qemu/StreamFormat.hpp"

using namespace mm;

namespace {
struct NoSink final : qemu::MainChannelObserver::Sink {
  void on_zero_page(std::string_view, uint64_t) override {}
  void on_page(std::string_view, uint64_t) override {}
  void on_eos(uint64_t) override {}
  void on_multifd_flush() override {}
  void on_opaque(std::string_view) override {}
};
}  // namespace

TEST(StreamFormat, Qemu72ClassifiesItsChannelsFromTheFirstBytes) {
  const qemu::StreamFormat& f = qemu::qemu_7_2();
  EXPECT_EQ(f.name(), "QEMU 7.2");
  EXPECT_TRUE(f.main_channel_first());
  std::array<uint8_t, qemu::kMultifdInitSize> init{};
  qemu::MultifdInit mi;
  mi.id = 5;
  qemu::encode_multifd_init(mi, std::span<uint8_t, qemu::kMultifdInitSize>(init));
  ASSERT_LE(f.classify_size(), init.size());
  const qemu::ChannelKind k = f.classify({init.data(), f.classify_size()});
  EXPECT_EQ(k.type, qemu::ChannelKind::multifd);
  EXPECT_EQ(k.multifd_id, 5);
  EXPECT_EQ(f.classify({init.data(), 3}).type, qemu::ChannelKind::need_more);
  const uint8_t qevm[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  EXPECT_EQ(f.classify(qevm).type, qemu::ChannelKind::main);
  qemu::MultifdInit back;
  EXPECT_EQ(f.parse_init({init.data(), f.init_size()}, back), qemu::MultifdError::ok);
  EXPECT_EQ(back.id, 5);
}

TEST(StreamFormat, Qemu72HeadersRoundTripThroughTheFormat) {
  const qemu::StreamFormat& f = qemu::qemu_7_2();
  qemu::MultifdHeaderView h;
  h.flags = qemu::multifd_flag::sync;
  h.pages_alloc = 128;
  h.normal_pages = 3;
  h.next_packet_size = 3 * 4096;
  h.packet_num = 42;
  h.ramblock = "pc.ram";
  const std::array<uint64_t, 3> offsets{0, 4096 * 7, 4096 * 9};
  std::vector<uint8_t> buf(h.header_size());
  ASSERT_LE(buf.size(), f.max_header_size());
  f.encode_header(h, offsets, buf);
  size_t size = 0;
  ASSERT_EQ(f.header_size(buf, size), qemu::MultifdError::ok);
  EXPECT_EQ(size, buf.size());
  qemu::MultifdHeaderView got;
  ASSERT_EQ(f.parse_header(buf, got), qemu::MultifdError::ok);
  EXPECT_EQ(got.normal_pages, 3u);
  EXPECT_EQ(got.packet_num, 42u);
  EXPECT_EQ(got.ramblock, "pc.ram");
  EXPECT_TRUE(f.is_sync(got));
  EXPECT_FALSE(f.compressed_by_qemu(got));
  got.flags = qemu::multifd_flag::zstd;
  EXPECT_TRUE(f.compressed_by_qemu(got));
  EXPECT_FALSE(f.is_sync(got));
}

TEST(StreamFormat, Qemu72BoundsWhatAPacketMayTake) {
  const qemu::StreamFormat& f = qemu::qemu_7_2();
  EXPECT_EQ(f.page_size(), 4096u);
  EXPECT_EQ(f.typical_pages_per_packet(), 128u);
  EXPECT_EQ(f.rebuilt_bound(0), 0u);
  EXPECT_EQ(f.rebuilt_bound(f.max_pages_per_packet() + 1), 0u);
  EXPECT_EQ(f.rebuilt_bound(128), 320 + 8 * 128 + 128 * 4096u);
  EXPECT_EQ(f.rebuilt_bound(f.max_pages_per_packet()), f.max_header_size() + f.max_pages_per_packet() * 4096u);
  NoSink sink;
  EXPECT_NE(f.observe_main(sink), nullptr);
}
