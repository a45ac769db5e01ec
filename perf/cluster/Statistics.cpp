#include "perf/cluster/Statistics.hpp"

#include <algorithm>
#include <cmath>

namespace mm::cluster {

namespace {

// Detectors call these for every host at every decision: reuse one buffer.
std::vector<double>& scratch() {
  thread_local std::vector<double> buffer;
  return buffer;
}

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

namespace {

// Median of v (reordered): nth_element for the upper middle, the largest
// of the lower half for the other one when n is even.
double median_in_place(std::vector<double>& v) {
  const size_t n = v.size();
  const auto mid = v.begin() + static_cast<long>(n / 2);
  std::nth_element(v.begin(), mid, v.end());
  if (n % 2) return *mid;
  return 0.5 * (*std::max_element(v.begin(), mid) + *mid);
}

}  // namespace

double median_absolute_deviation(std::span<const double> values) {
  if (values.empty()) return 0;
  std::vector<double>& v = scratch();
  v.assign(values.begin(), values.end());
  const double m = median_in_place(v);
  for (size_t i = 0; i < values.size(); ++i) v[i] = std::fabs(m - values[i]);
  return median_in_place(v);
}

double interquartile_range(std::span<const double> values) {
  std::vector<double>& v = scratch();
  v.assign(values.begin(), values.end());
  std::sort(v.begin(), v.end());
  const double n1 = static_cast<double>(v.size() + 1);
  // Java's Math.round is floor(x + 0.5).
  const auto q1 = static_cast<long>(std::floor(0.25 * n1 + 0.5)) - 1;
  const auto q3 = static_cast<long>(std::floor(0.75 * n1 + 0.5)) - 1;
  const auto clamp = [&](long i) { return static_cast<size_t>(std::clamp(i, 0L, long(v.size()) - 1)); };
  return v[clamp(q3)] - v[clamp(q1)];
}

std::optional<LineFit> fit_line(std::span<const double> x, std::span<const double> y,
                                std::span<const double> w) {
  double sw = 0, sx = 0, sy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w.empty() ? 1.0 : w[i];
    sw += wi;
    sx += wi * x[i];
    sy += wi * y[i];
  }
  if (sw <= 0) return std::nullopt;
  const double mx = sx / sw, my = sy / sw;
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w.empty() ? 1.0 : w[i];
    sxx += wi * (x[i] - mx) * (x[i] - mx);
    sxy += wi * (x[i] - mx) * (y[i] - my);
  }
  if (sxx <= 0) return std::nullopt;
  LineFit f;
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  return f;
}

namespace {

// Tricube weight of point i of n (newest, i = n - 1, weighs 1). The three
// oldest share the weight of the third, as in CloudSim's getTricubeWeigts.
std::vector<double> tricube_weights(size_t n) {
  std::vector<double> w(n, 1.0);
  const double top = static_cast<double>(n) - 1;
  for (size_t i = 2; i < n; ++i) {
    const double d = (top - static_cast<double>(i)) / top;
    w[i] = std::pow(1 - std::pow(d, 3), 3);
  }
  if (n > 2) w[0] = w[1] = w[2];
  return w;
}

std::vector<double> positions(size_t n) {
  std::vector<double> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<double>(i + 1);
  return x;
}

}  // namespace

std::optional<LineFit> loess_fit(std::span<const double> history, bool weighted) {
  const auto x = positions(history.size());
  if (!weighted) return fit_line(x, history);
  const auto w = tricube_weights(history.size());
  return fit_line(x, history, w);
}

std::optional<LineFit> robust_loess_fit(std::span<const double> history, bool weighted) {
  const auto first = loess_fit(history, weighted);
  if (!first || !weighted) return first;
  const size_t n = history.size();
  const auto x = positions(n);
  std::vector<double> residuals(n), abs_res(n);
  for (size_t i = 0; i < n; ++i) {
    residuals[i] = history[i] - (first->intercept + first->slope * x[i]);
    abs_res[i] = std::fabs(residuals[i]);
  }
  const double s6 = 6 * median(abs_res);
  auto w = tricube_weights(n);
  if (s6 > 0)
    for (size_t i = 0; i < n; ++i) {
      const double r = residuals[i] / s6;
      w[i] *= std::fabs(r) < 1 ? std::pow(1 - r * r, 2) : 0.0;
    }
  const auto second = fit_line(x, history, w);
  return second ? second : first;
}

bool solve_linear_system(std::vector<std::vector<double>>& a, std::vector<double>& b) {
  const size_t n = b.size();
  double scale = 0;
  for (auto& row : a)
    for (double v : row) scale = std::max(scale, std::fabs(v));
  const double eps = 1e-12 * std::max(scale, 1e-300);
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    if (std::fabs(a[pivot][col]) <= eps) return false;
    std::swap(a[pivot], a[col]);
    std::swap(b[pivot], b[col]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = a[r][col] / a[col][col];
      if (f == 0) continue;
      for (size_t c = col; c < n; ++c) a[r][c] -= f * a[col][c];
      b[r] -= f * b[col];
    }
  }
  for (size_t col = n; col-- > 0;) {
    double s = b[col];
    for (size_t c = col + 1; c < n; ++c) s -= a[col][c] * b[c];
    b[col] = s / a[col][col];
  }
  return true;
}

std::optional<double> multiple_correlation(const std::vector<std::vector<double>>& series,
                                           size_t target) {
  const size_t k = series.size();  // regressors: k - 1 others plus the intercept
  if (k == 0) return std::nullopt;
  const size_t m = series[0].size();
  if (m <= k) return std::nullopt;  // degrees of freedom m - k must be positive
  std::vector<std::vector<double>> xtx(k, std::vector<double>(k, 0.0));
  std::vector<double> xty(k, 0.0);
  std::vector<double> row(k);
  const auto& y = series[target];
  for (size_t t = 0; t < m; ++t) {
    row[0] = 1.0;
    size_t c = 1;
    for (size_t j = 0; j < k; ++j)
      if (j != target) row[c++] = series[j][t];
    for (size_t a = 0; a < k; ++a) {
      xty[a] += row[a] * y[t];
      for (size_t b = 0; b < k; ++b) xtx[a][b] += row[a] * row[b];
    }
  }
  if (!solve_linear_system(xtx, xty)) return std::nullopt;
  double mean = 0;
  for (double v : y) mean += v;
  mean /= static_cast<double>(m);
  double ss_res = 0, ss_tot = 0;
  for (size_t t = 0; t < m; ++t) {
    double pred = xty[0];
    size_t c = 1;
    for (size_t j = 0; j < k; ++j)
      if (j != target) pred += xty[c++] * series[j][t];
    ss_res += (y[t] - pred) * (y[t] - pred);
    ss_tot += (y[t] - mean) * (y[t] - mean);
  }
  if (ss_tot <= 0) return std::nullopt;
  return 1.0 - ss_res / ss_tot;
}

}  // namespace mm::cluster
