// The statistics the overload detectors and the MC selector need, with the
// conventions of CloudSim's MathUtil so results can be compared: median as
// the mean of the two middle values, IQR from rounded quartile positions.
#pragma once

#include <optional>
#include <span>
#include <vector>

namespace mm::cluster {

double median(std::vector<double> values);
// Median absolute deviation from the median.
double median_absolute_deviation(std::span<const double> values);
// Q3 - Q1 with Qp = sorted[round(p * (n + 1)) - 1] (CloudSim's MathUtil.iqr).
double interquartile_range(std::span<const double> values);

struct LineFit {
  double intercept = 0;
  double slope = 0;
};
// Least squares y = a + b x with optional weights (empty: unweighted).
// nullopt when x has no spread.
std::optional<LineFit> fit_line(std::span<const double> x, std::span<const double> y,
                                std::span<const double> weights = {});

// Local regression of a history ordered oldest to newest against x = 1..n.
// CloudSim's code computes tricube weights but, because its weighting only
// applies when 40 % of them are zero, ends up with a plain least-squares fit;
// `weighted` selects the paper's tricube weighting (and, for the robust fit,
// bisquare reweighting of residuals) instead.
std::optional<LineFit> loess_fit(std::span<const double> history, bool weighted);
std::optional<LineFit> robust_loess_fit(std::span<const double> history, bool weighted);

// R^2 of regressing series[target] on all other series plus an intercept
// (ordinary least squares). nullopt when the degrees of freedom are not
// positive or the normal equations are singular: CloudSim then falls back.
std::optional<double> multiple_correlation(const std::vector<std::vector<double>>& series,
                                           size_t target);

// Solves A x = b in place (Gaussian elimination, partial pivoting); false
// when A is singular. Public for the tests.
bool solve_linear_system(std::vector<std::vector<double>>& a, std::vector<double>& b);

}  // namespace mm::cluster
