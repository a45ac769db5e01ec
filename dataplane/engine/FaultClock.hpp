// Destination, postcopy: how long the destination QEMU waits for the pages
// it asks for. Every page request on the return path
// (qemu/ReturnPath.hpp) starts a clock for its first page; the page that
// answers it, as the postcopy-preempt channel hands it to QEMU
// (qemu/MainChannelObserver.hpp, Kind::preempt), stops it. A request
// the source answers on the main channel instead (the page was already
// on its way there), or not at all, is never matched: it is counted when
// its clock runs out or the session ends. Owned by the session's home part
// (the return path and the preempt stream both live there); no
// allocation per request: a fixed open-addressing table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mm::engine {

// Latencies in microseconds, 8 buckets per power of two (12.5 %
// resolution), up to 2^30 us; quantiles are a bucket's upper edge, never
// above the largest value added.
class LatencyHistogram {
 public:
  static constexpr unsigned kSub = 8;
  static constexpr unsigned kBuckets = kSub * 29;

  void add_ns(uint64_t ns);
  void merge(const LatencyHistogram& o);
  uint64_t count() const { return count_; }
  uint64_t max_ns() const { return max_ns_; }
  uint64_t sum_ns() const { return sum_ns_; }
  // The q-quantile (0 < q <= 1) in ns; 0 when empty.
  uint64_t quantile_ns(double q) const;

  static unsigned bucket_of(uint64_t us);
  static uint64_t bucket_high_us(unsigned b);  // exclusive upper edge

 private:
  std::array<uint32_t, kBuckets> buckets_{};
  uint64_t count_ = 0, max_ns_ = 0, sum_ns_ = 0;
};

struct FaultStats {
  uint64_t requests = 0;   // page requests read on the return path
  uint64_t answered = 0;   // ... whose page came on the preempt channel (timed)
  uint64_t unmatched = 0;  // ... answered elsewhere or not at all (expired, or left at the end)
  uint64_t dropped = 0;    // not timed: the table was full, or too many RAM blocks
  LatencyHistogram latency;
  void merge(const FaultStats& o);
};

class FaultClock {
 public:
  // Requests older than this are given up (counted unmatched).
  static constexpr uint64_t kExpireNs = 10'000'000'000;
  static constexpr size_t kSlots = 4096;  // power of two
  static constexpr size_t kMaxBlocks = 64;

  FaultClock();
  void requested(std::string_view block, uint64_t offset, uint64_t now);
  // A request that is only counted (its answer cannot be seen).
  void counted() { ++stats_.requests; }
  void delivered(std::string_view block, uint64_t offset, uint64_t now);
  // Gives up requests older than kExpireNs (call now and then).
  void expire(uint64_t now);
  // The session ended: whatever is still waiting was answered elsewhere.
  void finish();
  const FaultStats& stats() const { return stats_; }
  size_t waiting() const { return used_; }

 private:
  struct Slot {
    uint64_t key = 0;  // 0: free
    uint64_t since = 0;
  };
  // (block index + 1) << 44 | page number: never 0.
  bool key_of(std::string_view block, uint64_t offset, bool add, uint64_t& key);
  size_t find(uint64_t key) const;  // kSlots: absent
  void erase(size_t i);

  std::vector<std::string> blocks_;
  std::vector<Slot> slots_;
  size_t used_ = 0;
  uint64_t last_expire_ = 0;
  FaultStats stats_;
};

}  // namespace mm::engine
