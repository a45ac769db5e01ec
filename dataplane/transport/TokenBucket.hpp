// A token bucket in bytes: the per-session pacer for `max-bandwidth`
// (dataplane/wire/MMP.md: wire bytes, headers included). rate 0 means unlimited.
#pragma once

#include <algorithm>
#include <cstdint>

namespace mm::transport {

class TokenBucket {
 public:
  // burst: the most that may leave back to back after an idle spell; at
  // least one jumbo frame so a full packet can always go eventually. The
  // default is 10 ms of traffic: a worker that shares its core (or sleeps
  // in back-off) is off the CPU for milliseconds, and a bucket that fills
  // in 1 ms lost the rest of each such spell (1 Gbit/s paced sessions ran
  // at ~60 % of the cap on the 2-core test machine).
  TokenBucket(uint64_t rate_bytes_per_s = 0, uint64_t burst = 0) { set_rate(rate_bytes_per_s, burst); }

  void set_rate(uint64_t rate_bytes_per_s, uint64_t burst = 0) {
    rate_ = rate_bytes_per_s;
    burst_ = std::max<uint64_t>(burst ? burst : rate_ / 100, 65536);
    tokens_ = burst_;
  }
  // A new rate that keeps the tokens saved (up to the new burst).
  void retune(uint64_t rate_bytes_per_s) {
    if (rate_bytes_per_s == rate_) return;
    const bool was_unlimited = unlimited();
    const uint64_t saved = tokens_;
    set_rate(rate_bytes_per_s);
    if (!was_unlimited) tokens_ = std::min(saved, burst_);
  }
  bool unlimited() const { return rate_ == 0; }
  uint64_t rate() const { return rate_; }

  // Bytes that may be sent now.
  uint64_t available(uint64_t now_ns) {
    if (unlimited()) return UINT64_MAX;
    if (now_ns > last_ns_) {
      // In double: rate * elapsed ns would overflow 64 bits after ~18 s at 1 GB/s.
      const double add = double(rate_) * double(now_ns - last_ns_) / 1e9;
      tokens_ = uint64_t(std::min(double(tokens_) + add, double(burst_)));
      last_ns_ = now_ns;
    }
    return tokens_;
  }
  void consume(uint64_t bytes) {
    if (!unlimited()) tokens_ = bytes >= tokens_ ? 0 : tokens_ - bytes;
  }

 private:
  uint64_t rate_ = 0;
  uint64_t burst_ = 0;
  uint64_t tokens_ = 0;
  uint64_t last_ns_ = 0;
};

}  // namespace mm::transport
