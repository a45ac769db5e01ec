#include "perf/cluster/OverloadDetector.hpp"

#include <array>
#include <cmath>

#include "perf/cluster/Statistics.hpp"

namespace mm::cluster {

bool StaticThresholdDetector::is_overloaded(const ClusterModel& model, int host) const {
  return model.requested_utilization(host) > threshold_;
}

namespace {

// CloudSim's MathUtil.countNonZeroBeginning: samples up to and including the
// oldest non-zero one.
int count_up_to_last_nonzero(std::span<const double> h) {
  int i = static_cast<int>(h.size());
  while (i > 0 && h[size_t(i - 1)] == 0) --i;
  return i;
}

}  // namespace

std::optional<double> AdaptiveThresholdDetector::threshold(const ClusterModel& model,
                                                           int host) const {
  std::array<double, kHistoryLength> buf{};
  const int n = model.host_history(host, buf);
  // PowerHostUtilizationHistory.getUtilizationHistory trims the zeros at the
  // old end (MathUtil.trimZeroTail): the spread is of what is left.
  const std::span<const double> h(buf.data(), size_t(count_up_to_last_nonzero({buf.data(), size_t(n)})));
  if (h.size() < 12) return std::nullopt;
  const double spread =
      spread_ == Spread::iqr ? interquartile_range(h) : median_absolute_deviation(h);
  return 1 - safety_ * spread;
}

bool AdaptiveThresholdDetector::is_overloaded(const ClusterModel& model, int host) const {
  const auto t = threshold(model, host);
  if (!t) return fallback_.is_overloaded(model, host);
  return model.requested_utilization(host) > *t;
}

std::optional<double> LocalRegressionDetector::predicted(const ClusterModel& model,
                                                        int host) const {
  constexpr int kLength = 10;  // CloudSim: short enough to follow the latest values
  std::array<double, kHistoryLength> buf{};
  // Trimmed of the zeros at the old end, as CloudSim's history is.
  const int n = count_up_to_last_nonzero({buf.data(), size_t(model.host_history(host, buf))});
  if (n < kLength) return std::nullopt;
  std::array<double, kLength> oldest_first{};
  for (int i = 0; i < kLength; ++i) oldest_first[size_t(i)] = buf[size_t(kLength - 1 - i)];
  const auto fit = robust_ ? robust_loess_fit(oldest_first, weighted_)
                           : loess_fit(oldest_first, weighted_);
  if (!fit) return std::nullopt;
  const double intervals = std::ceil(max_migration_s_(model, host) / interval_s_);
  return safety_ * (fit->intercept + fit->slope * (kLength + intervals));
}

bool LocalRegressionDetector::is_overloaded(const ClusterModel& model, int host) const {
  const auto p = predicted(model, host);
  if (!p) return fallback_.is_overloaded(model, host);
  return *p >= 1;
}

}  // namespace mm::cluster
