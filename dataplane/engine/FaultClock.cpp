#include "dataplane/engine/FaultClock.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace mm::engine {

namespace {
constexpr uint64_t kPageShift = 12;
constexpr unsigned kPageBits = 44;
uint64_t mix(uint64_t k) {
  k ^= k >> 31;
  k *= 0x9E3779B97F4A7C15ull;
  return k ^ (k >> 29);
}
}  // namespace

unsigned LatencyHistogram::bucket_of(uint64_t us) {
  if (us < kSub) return unsigned(us);
  const unsigned b = unsigned(std::bit_width(us)) - 1;  // >= 3
  const unsigned idx = (b - 2) * kSub + unsigned((us >> (b - 3)) & (kSub - 1));
  return std::min(idx, kBuckets - 1);
}

uint64_t LatencyHistogram::bucket_high_us(unsigned idx) {
  if (idx < kSub) return idx + 1;
  const unsigned b = idx / kSub + 2;
  const uint64_t sub = idx % kSub;
  return ((kSub + sub) << (b - 3)) + (uint64_t(1) << (b - 3));
}

void LatencyHistogram::add_ns(uint64_t ns) {
  ++buckets_[bucket_of(ns / 1000)];
  ++count_;
  sum_ns_ += ns;
  max_ns_ = std::max(max_ns_, ns);
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (unsigned i = 0; i < kBuckets; ++i) buckets_[i] += o.buckets_[i];
  count_ += o.count_;
  sum_ns_ += o.sum_ns_;
  max_ns_ = std::max(max_ns_, o.max_ns_);
}

uint64_t LatencyHistogram::quantile_ns(double q) const {
  if (count_ == 0) return 0;
  const uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(count_))));
  uint64_t seen = 0;
  for (unsigned i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(bucket_high_us(i) * 1000, max_ns_);
  }
  return max_ns_;
}

void FaultStats::merge(const FaultStats& o) {
  requests += o.requests;
  answered += o.answered;
  unmatched += o.unmatched;
  dropped += o.dropped;
  latency.merge(o.latency);
}

FaultClock::FaultClock() : slots_(kSlots) {}

bool FaultClock::key_of(std::string_view block, uint64_t offset, bool add, uint64_t& key) {
  const uint64_t page = offset >> kPageShift;
  if (page >> kPageBits) return false;
  size_t b = 0;
  while (b < blocks_.size() && blocks_[b] != block) ++b;
  if (b == blocks_.size()) {
    // A new RAM block name: cold (a VM has a handful).
    if (!add || blocks_.size() >= kMaxBlocks) return false;
    blocks_.emplace_back(block);
  }
  key = (uint64_t(b) + 1) << kPageBits | page;
  return true;
}

size_t FaultClock::find(uint64_t key) const {
  for (size_t i = mix(key) & (kSlots - 1), n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
    if (slots_[i].key == key) return i;
    if (slots_[i].key == 0) return kSlots;
  }
  return kSlots;
}

void FaultClock::erase(size_t i) {
  // Backward-shift deletion keeps every probe sequence unbroken.
  size_t hole = i;
  for (size_t j = (i + 1) & (kSlots - 1);; j = (j + 1) & (kSlots - 1)) {
    if (slots_[j].key == 0) break;
    const size_t home = mix(slots_[j].key) & (kSlots - 1);
    // j's entry may move into the hole if its home is not in (hole, j].
    const bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!between) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
  --used_;
}

void FaultClock::requested(std::string_view block, uint64_t offset, uint64_t now) {
  ++stats_.requests;
  uint64_t key;
  if (!key_of(block, offset, true, key)) {
    ++stats_.dropped;
    return;
  }
  if (find(key) != kSlots) {
    // Asked again before the answer came: the first request's clock runs on.
    return;
  }
  if (used_ * 4 >= kSlots * 3) {
    expire(now);
    if (used_ * 4 >= kSlots * 3) {
      ++stats_.dropped;
      return;
    }
  }
  size_t i = mix(key) & (kSlots - 1);
  while (slots_[i].key != 0) i = (i + 1) & (kSlots - 1);
  slots_[i] = Slot{key, now};
  ++used_;
}

void FaultClock::delivered(std::string_view block, uint64_t offset, uint64_t now) {
  if (used_ == 0) return;
  uint64_t key;
  if (!key_of(block, offset, false, key)) return;
  const size_t i = find(key);
  if (i == kSlots) return;  // a page nobody is waiting for (the rest of a host page, a resend)
  stats_.latency.add_ns(now > slots_[i].since ? now - slots_[i].since : 0);
  ++stats_.answered;
  erase(i);
}

void FaultClock::expire(uint64_t now) {
  if (used_ == 0 || now - last_expire_ < kExpireNs / 10) return;
  last_expire_ = now;
  for (size_t i = 0; i < kSlots;) {
    if (slots_[i].key != 0 && now > slots_[i].since && now - slots_[i].since > kExpireNs) {
      ++stats_.unmatched;
      erase(i);  // something may have shifted into i: look at it again
      continue;
    }
    ++i;
  }
}

void FaultClock::finish() {
  stats_.unmatched += used_;
  std::fill(slots_.begin(), slots_.end(), Slot{});
  used_ = 0;
}

}  // namespace mm::engine
