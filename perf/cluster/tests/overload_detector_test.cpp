#include "perf/cluster/OverloadDetector.hpp"

#include <gtest/gtest.h>

#include "perf/cluster/tests/TestCluster.hpp"

using namespace mm::cluster;
using namespace mm::cluster::testing;

namespace {

// One G5 host (5320 MIPS) with one 2500 MIPS VM whose history is given.
ClusterModel host_with_history(TraceHolder& t, std::vector<double> oldest_to_newest) {
  auto m = cluster_with_hosts({1});
  m.add_vm(0, t.constant(0));
  for (double u : oldest_to_newest) m.vms[0].push_history(u);
  m.vms[0].requested_mips = oldest_to_newest.back() * 2500;
  m.attach(0, 0);
  return m;
}

double host_u(double vm_u) { return vm_u * 2500 / 5320; }

}  // namespace

TEST(OverloadDetector, StaticThreshold) {
  TraceHolder t;
  auto m = host_with_history(t, {0.5});
  StaticThresholdDetector thr(0.2);
  EXPECT_TRUE(thr.is_overloaded(m, 0));  // 1250 / 5320 = 0.235
  StaticThresholdDetector thr2(0.25);
  EXPECT_FALSE(thr2.is_overloaded(m, 0));
}

TEST(OverloadDetector, AdaptiveThresholdsNeedTwelveSamplesThenUseTheSpread) {
  TraceHolder t;
  // 11 samples: falls back to THR 0.7 (host at 0.94 * 2500 / 5320 = 0.44: fine).
  std::vector<double> h(11, 0.4);
  h.back() = 0.94;
  auto m = host_with_history(t, h);
  AdaptiveThresholdDetector iqr(AdaptiveThresholdDetector::Spread::iqr, 1.5);
  EXPECT_FALSE(iqr.threshold(m, 0));
  EXPECT_FALSE(iqr.is_overloaded(m, 0));
  // 12 samples alternating 0.2 / 0.8 (host 0.094 / 0.376): IQR 0.282, so the
  // threshold is 1 - 1.5 * 0.282 = 0.577 and the host (0.376) is below it.
  std::vector<double> alt;
  for (int i = 0; i < 12; ++i) alt.push_back(i % 2 ? 0.8 : 0.2);
  auto m2 = host_with_history(t, alt);
  const auto thr = iqr.threshold(m2, 0);
  ASSERT_TRUE(thr);
  EXPECT_NEAR(*thr, 1 - 1.5 * (host_u(0.8) - host_u(0.2)), 1e-6);
  EXPECT_FALSE(iqr.is_overloaded(m2, 0));
  // A larger safety parameter lowers the threshold below the demand.
  AdaptiveThresholdDetector iqr3(AdaptiveThresholdDetector::Spread::iqr, 3.0);
  EXPECT_TRUE(iqr3.is_overloaded(m2, 0));
  // MAD of the same history: median 0.235, deviations all 0.141.
  AdaptiveThresholdDetector mad(AdaptiveThresholdDetector::Spread::mad, 2.5);
  EXPECT_NEAR(*mad.threshold(m2, 0), 1 - 2.5 * (host_u(0.8) - host_u(0.2)) / 2, 1e-6);
  // Zero samples at the old end do not count towards the twelve.
  std::vector<double> zeros(5, 0.0);
  for (int i = 0; i < 11; ++i) zeros.push_back(0.5);
  EXPECT_FALSE(iqr.threshold(host_with_history(t, zeros), 0));
  // Zeros at the old end are not part of the spread either (CloudSim's
  // trimZeroTail): 12 samples alternating, then 6 older zeros, give the same
  // threshold as the 12 alone (with the zeros the quartiles would differ).
  std::vector<double> padded(6, 0.0);
  padded.insert(padded.end(), alt.begin(), alt.end());
  const auto thr_padded = iqr.threshold(host_with_history(t, padded), 0);
  ASSERT_TRUE(thr_padded);
  EXPECT_NEAR(*thr_padded, *thr, 1e-12);
  EXPECT_NEAR(*mad.threshold(host_with_history(t, padded), 0), *mad.threshold(m2, 0), 1e-12);
}

TEST(OverloadDetector, LocalRegressionForecastsOneMigrationAhead) {
  TraceHolder t;
  auto no_time = [](const ClusterModel&, int) { return 20.0; };  // ceil(20 / 300) = 1
  // Host utilization rising 0.03 per interval up to 0.47: forecast at x = 11
  // is 0.50; times 1.2 = 0.6 < 1.
  std::vector<double> rising;
  for (int i = 0; i < 10; ++i) rising.push_back((0.2 + 0.03 * i) * 5320 / 2500);
  auto m = host_with_history(t, rising);
  LocalRegressionDetector lr(false, 1.2, 300, no_time);
  ASSERT_TRUE(lr.predicted(m, 0));
  EXPECT_NEAR(*lr.predicted(m, 0), 1.2 * 0.50, 1e-5);
  EXPECT_FALSE(lr.is_overloaded(m, 0));
  LocalRegressionDetector lr2(false, 2.1, 300, no_time);
  EXPECT_TRUE(lr2.is_overloaded(m, 0));  // 2.1 * 0.5 >= 1
  // A migration of 301 s looks two intervals ahead.
  LocalRegressionDetector lr_slow(false, 1.2, 300, [](const ClusterModel&, int) { return 301.0; });
  EXPECT_NEAR(*lr_slow.predicted(m, 0), 1.2 * 0.53, 1e-5);
  // Nine samples: THR 0.7 fallback.
  rising.resize(9);
  auto m9 = host_with_history(t, rising);
  EXPECT_FALSE(lr.predicted(m9, 0));
  LocalRegressionDetector lrr(true, 1.2, 300, no_time);
  EXPECT_FALSE(lrr.is_overloaded(m9, 0));
  // Nine samples after an old zero: still too short once the zero is trimmed.
  std::vector<double> zero_then_nine{0.0};
  zero_then_nine.insert(zero_then_nine.end(), rising.begin(), rising.end());
  EXPECT_FALSE(lr.predicted(host_with_history(t, zero_then_nine), 0));
}
