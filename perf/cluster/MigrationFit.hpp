// Migration cost fitted from perf/e2e runs (results.json): for each mode,
// total time, downtime and CPU seconds (both hosts) as linear functions of
// guest RAM, RAM over the link rate, dirty rate and identically rewritten
// dirty rate, least squares over the individual successful runs. The fit
// keeps its own error against those runs; MeasuredMigrationCost evaluates it
// for a simulated VM.
#pragma once

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "perf/cluster/MigrationCost.hpp"

namespace mm::cluster {

inline constexpr int kFitFeatures = 5;
using FitFeatures = std::array<double, kFitFeatures>;

// 1, RAM GiB, RAM GiB / link Gbit/s (0 without a cap), dirty MiB/s, dirty
// MiB/s rewritten with identical bytes.
FitFeatures migration_features(double ram_gib, double link_gbps, double dirty_mibps,
                               double identical_mibps);
// perf/e2e/mmperf/matrix.py's workloads: pages/s dirtied, % identical.
void workload_rates(const std::string& workload, double& dirty_mibps, double& identical_mibps);

struct FittedQuantity {
  FitFeatures coefficients{};
  double rmse = 0;
  double median_abs_pct = 0;  // |predicted - measured| / measured, median over runs
  double max_abs_pct = 0;
  double evaluate(const FitFeatures& x) const;
};

struct ModeFit {
  std::string mode;
  int runs = 0;
  FittedQuantity total_s, downtime_s, cpu_s;
};

struct MigrationFit {
  std::string source;
  std::vector<ModeFit> modes;
};

// Throws std::runtime_error when the file cannot be read or a mode has too
// few runs to fit.
MigrationFit fit_migration_runs(const std::filesystem::path& results_json);
nlohmann::json fit_to_json(const MigrationFit& fit);

class MeasuredMigrationCost final : public MigrationCostModel {
 public:
  // use_measured_cpu false keeps CloudSim's 10 % CPU charges instead of the
  // measured CPU seconds.
  MeasuredMigrationCost(ModeFit fit, const std::string& workload, double link_gbps,
                        bool use_measured_cpu = true);
  MigrationCost cost(const Vm& vm, const Host& src, const Host& dst) const override;
  double time_s(const Vm& vm, const Host& host) const override;
  std::string name() const override;
  const std::string& mode() const { return fit_.mode; }

 private:
  FitFeatures features(const Vm& vm) const;
  ModeFit fit_;
  std::string workload_;
  double link_gbps_, dirty_, identical_;
  bool use_measured_cpu_;
};

}  // namespace mm::cluster
