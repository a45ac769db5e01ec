#include "perf/cluster/MigrationFit.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "perf/cluster/tests/TestCluster.hpp"

using namespace mm::cluster;
using namespace mm::cluster::testing;

namespace {

// Runs generated from known coefficients, in results.json's shape.
std::filesystem::path synthetic_results() {
  nlohmann::json runs = nlohmann::json::array();
  for (int size : {512, 2048})
    for (std::string w : {"idle", "typical", "heavy", "rewrite-identical"})
      for (std::string cap : {"unlimited", "10G", "1G"}) {
        double dirty, ident;
        workload_rates(w, dirty, ident);
        const double link = cap == "unlimited" ? 0 : cap == "10G" ? 10 : 1;
        const auto x = migration_features(size / 1024.0, link, dirty, ident);
        const double total = 0.3 + 2.5 * x[1] + 4.0 * x[2] + 0.01 * x[3] - 0.005 * x[4];
        const double down = 0.05 + 0.01 * x[1] + 0.001 * x[3];
        const double cpu = 0.5 + 3 * x[1] + 0.02 * x[3];
        runs.push_back({{"mode", "mm-lz4"}, {"ok", true}, {"workload", w}, {"size_mib", size},
                        {"cap", cap}, {"total_ms", total * 1000}, {"downtime_ms", down * 1000},
                        {"cpu_total_s", cpu}});
      }
  runs.push_back({{"mode", "mm-lz4"}, {"ok", false}, {"workload", "idle"}, {"size_mib", 512},
                  {"cap", "1G"}, {"total_ms", nullptr}, {"downtime_ms", nullptr},
                  {"cpu_total_s", nullptr}});
  const auto p = std::filesystem::temp_directory_path() / "mm_cluster_fit_test.json";
  std::ofstream(p) << nlohmann::json{{"meta", {}}, {"runs", runs}}.dump();
  return p;
}

}  // namespace

TEST(MigrationFit, RecoversTheCoefficientsOfExactData) {
  const auto fit = fit_migration_runs(synthetic_results());
  ASSERT_EQ(fit.modes.size(), 1u);
  const auto& m = fit.modes[0];
  EXPECT_EQ(m.runs, 24);  // the failed run is left out
  EXPECT_NEAR(m.total_s.coefficients[0], 0.3, 1e-9);
  EXPECT_NEAR(m.total_s.coefficients[2], 4.0, 1e-9);
  EXPECT_NEAR(m.total_s.coefficients[4], -0.005, 1e-9);
  EXPECT_NEAR(m.cpu_s.coefficients[1], 3, 1e-9);
  EXPECT_LT(m.total_s.rmse, 1e-9);
  EXPECT_LT(m.downtime_s.max_abs_pct, 1e-6);
  const auto j = fit_to_json(fit);
  EXPECT_EQ(j["modes"][0]["mode"], "mm-lz4");
}

TEST(MigrationFit, MeasuredCostEvaluatesTheFitForAVm) {
  const auto fit = fit_migration_runs(synthetic_results());
  TraceHolder t;
  auto c = cluster_with_hosts({0, 1});
  c.add_vm(1, t.constant(50));  // 1740 MB
  MeasuredMigrationCost measured(fit.modes[0], "idle", 1.0);
  const double gib = 1740 / 1024.0;
  const auto cost = measured.cost(c.vms[0], c.hosts[0], c.hosts[1]);
  EXPECT_NEAR(cost.total_s, 0.3 + 2.5 * gib + 4.0 * gib, 1e-9);
  EXPECT_NEAR(cost.downtime_s, 0.05 + 0.01 * gib, 1e-9);
  // CPU seconds split over both hosts during the migration, in PE MIPS.
  const double cpu = 0.5 + 3 * gib;
  EXPECT_NEAR(cost.src_mips, 0.5 * cpu / cost.total_s * 1860, 1e-6);
  EXPECT_NEAR(cost.dst_mips, 0.5 * cpu / cost.total_s * 2660, 1e-6);
  MeasuredMigrationCost cloudsim_cpu(fit.modes[0], "idle", 1.0, false);
  EXPECT_DOUBLE_EQ(cloudsim_cpu.cost(c.vms[0], c.hosts[0], c.hosts[1]).dst_fraction, 0.1);
}

TEST(MigrationFit, RefusesMissingOrEmptyInput) {
  EXPECT_THROW(fit_migration_runs("/nonexistent/results.json"), std::runtime_error);
  const auto p = std::filesystem::temp_directory_path() / "mm_cluster_fit_empty.json";
  std::ofstream(p) << R"({"runs": []})";
  EXPECT_THROW(fit_migration_runs(p), std::runtime_error);
  EXPECT_THROW(MeasuredMigrationCost(ModeFit{}, "bursty", 1), std::invalid_argument);
}
