// Proves the fault clock times a request until its page comes, keeps the
// first request's clock when a page is asked for twice, counts what is
// never answered, and that its histogram's quantiles bound the values.
#include <gtest/gtest.h>

#include <string>

#include "dataplane/engine/FaultClock.hpp"

using mm::engine::FaultClock;
using mm::engine::LatencyHistogram;

TEST(LatencyHistogram, BucketsAreContiguousAndQuantilesBoundTheValues) {
  for (uint64_t us = 0; us < 100000; ++us) {
    const unsigned b = LatencyHistogram::bucket_of(us);
    EXPECT_LT(us, LatencyHistogram::bucket_high_us(b)) << us;
    if (b > 0) {
      EXPECT_GE(us, LatencyHistogram::bucket_high_us(b - 1)) << us;
    }
  }
  LatencyHistogram h;
  EXPECT_EQ(h.quantile_ns(0.5), 0u);
  for (uint64_t us = 1; us <= 1000; ++us) h.add_ns(us * 1000);
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.max_ns(), 1'000'000u);
  // Within one bucket (12.5 %) above the true quantile, never above the max.
  EXPECT_GE(h.quantile_ns(0.5), 500'000u);
  EXPECT_LE(h.quantile_ns(0.5), 500'000u * 9 / 8 + 1000);
  EXPECT_GE(h.quantile_ns(0.99), 990'000u);
  EXPECT_LE(h.quantile_ns(0.99), h.max_ns());
  LatencyHistogram other;
  other.add_ns(5'000'000);
  h.merge(other);
  EXPECT_EQ(h.count(), 1001u);
  EXPECT_EQ(h.quantile_ns(1.0), 5'000'000u);
}

TEST(FaultClock, TimesEachRequestUntilItsPageComes) {
  FaultClock c;
  c.requested("pc.ram", 0x5000, 1'000'000);
  c.requested("pc.ram", 0x5000, 1'500'000);  // asked again: the first clock runs on
  c.requested("vga.vram", 0x5000, 2'000'000);
  c.delivered("pc.ram", 0x6000, 2'500'000);   // nobody waits for it
  c.delivered("pc.ram", 0x5000, 4'000'000);
  c.delivered("pc.ram", 0x5000, 9'000'000);   // a resend: already answered
  c.delivered("other", 0x5000, 9'000'000);    // a block never asked about
  EXPECT_EQ(c.stats().requests, 3u);
  EXPECT_EQ(c.stats().answered, 1u);
  EXPECT_EQ(c.stats().latency.max_ns(), 3'000'000u);
  EXPECT_EQ(c.waiting(), 1u);
  c.finish();  // the vga.vram request was answered elsewhere
  EXPECT_EQ(c.stats().unmatched, 1u);
  EXPECT_EQ(c.waiting(), 0u);
}

TEST(FaultClock, GivesUpOldRequestsAndNeverOverfills) {
  FaultClock c;
  for (uint64_t i = 0; i < FaultClock::kSlots; ++i) c.requested("pc.ram", i << 12, 1);
  // Three quarters of the table, then the rest is dropped (counted).
  EXPECT_EQ(c.waiting(), FaultClock::kSlots * 3 / 4);
  EXPECT_EQ(c.stats().dropped, FaultClock::kSlots / 4);
  // Every waiting request can still be found after the others' removal.
  for (uint64_t i = 0; i < FaultClock::kSlots * 3 / 4; i += 2) c.delivered("pc.ram", i << 12, 2);
  EXPECT_EQ(c.stats().answered, FaultClock::kSlots * 3 / 8);
  for (uint64_t i = 1; i < FaultClock::kSlots * 3 / 4; i += 2) c.delivered("pc.ram", i << 12, 3);
  EXPECT_EQ(c.stats().answered, FaultClock::kSlots * 3 / 4);
  EXPECT_EQ(c.waiting(), 0u);
  c.requested("pc.ram", 0, 10);
  c.expire(10 + FaultClock::kExpireNs + 1);
  EXPECT_EQ(c.stats().unmatched, 1u);
  EXPECT_EQ(c.waiting(), 0u);
  // More RAM blocks than it keeps names for: dropped, counted (pc.ram is
  // known already, so the 64th new name is one too many).
  for (size_t b = 0; b < FaultClock::kMaxBlocks; ++b) c.requested("block" + std::to_string(b), 0, 20);
  EXPECT_EQ(c.stats().dropped, FaultClock::kSlots / 4 + 1);
}
