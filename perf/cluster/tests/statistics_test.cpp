#include "perf/cluster/Statistics.hpp"

#include <gtest/gtest.h>

using namespace mm::cluster;

TEST(Statistics, MedianMadIqr) {
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 2}), 2.5);
  const std::vector<double> v{1, 1, 2, 2, 4, 6, 9};
  EXPECT_DOUBLE_EQ(median_absolute_deviation(v), 1);  // deviations 1 1 0 0 2 4 7
  // n = 12: Q1 at round(3.25) - 1 = 2, Q3 at round(9.75) - 1 = 9.
  const std::vector<double> w{12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
  EXPECT_DOUBLE_EQ(interquartile_range(w), 10 - 3);
}

TEST(Statistics, LineFitAndLoess) {
  const std::vector<double> x{1, 2, 3, 4}, y{3, 5, 7, 9};
  const auto f = fit_line(x, y);
  ASSERT_TRUE(f);
  EXPECT_NEAR(f->intercept, 1, 1e-12);
  EXPECT_NEAR(f->slope, 2, 1e-12);
  EXPECT_FALSE(fit_line(std::vector<double>{2, 2}, std::vector<double>{1, 3}));
  // A straight history is fitted exactly by every variant.
  const std::vector<double> h{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
  for (bool weighted : {false, true}) {
    const auto l = loess_fit(h, weighted);
    const auto r = robust_loess_fit(h, weighted);
    ASSERT_TRUE(l && r);
    EXPECT_NEAR(l->slope, 0.1, 1e-9);
    EXPECT_NEAR(r->intercept, 0.0, 1e-9);
  }
  // An outlier in the oldest sample moves the unweighted fit more than the
  // weighted ones, which trust the newest samples.
  std::vector<double> o = h;
  o[0] = 1.0;
  const double plain = loess_fit(o, false)->slope;
  const double tricube = loess_fit(o, true)->slope;
  const double robust = robust_loess_fit(o, true)->slope;
  EXPECT_LT(plain, tricube);
  EXPECT_LE(tricube, robust + 1e-12);
  EXPECT_NEAR(robust, 0.1, 0.02);
}

TEST(Statistics, MultipleCorrelation) {
  // Series 0 is exactly 2 * series 1 + 1: R^2 = 1.
  std::vector<std::vector<double>> s{{3, 5, 9, 7, 11}, {1, 2, 4, 3, 5}, {1, 0, 1, 0, 1}};
  const auto r = multiple_correlation(s, 0);
  ASSERT_TRUE(r);
  EXPECT_NEAR(*r, 1.0, 1e-9);
  // Three regressors (two others + intercept) need more than three samples.
  std::vector<std::vector<double>> few{{1, 2, 3}, {2, 1, 3}, {0, 1, 1}};
  EXPECT_FALSE(multiple_correlation(few, 0));
  std::vector<std::vector<double>> a{{1, 2}, {3, 4}};
  std::vector<double> b{5, 6};
  ASSERT_TRUE(solve_linear_system(a, b));
  EXPECT_NEAR(b[0], -4, 1e-12);
  EXPECT_NEAR(b[1], 4.5, 1e-12);
  std::vector<std::vector<double>> sing{{1, 2}, {2, 4}};
  std::vector<double> c{1, 2};
  EXPECT_FALSE(solve_linear_system(sing, c));
}
