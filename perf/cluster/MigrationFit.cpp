#include "perf/cluster/MigrationFit.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "perf/cluster/Statistics.hpp"

namespace mm::cluster {

FitFeatures migration_features(double ram_gib, double link_gbps, double dirty, double identical) {
  return {1.0, ram_gib, link_gbps > 0 ? ram_gib / link_gbps : 0.0, dirty, identical};
}

void workload_rates(const std::string& w, double& dirty, double& identical) {
  // pages/s * 4096 B / MiB; 'same' is the share rewritten identically.
  const auto rate = [](double pages) { return pages * 4096.0 / (1024.0 * 1024.0); };
  if (w == "idle") {
    dirty = identical = 0;
  } else if (w == "typical") {
    dirty = rate(2000);
    identical = 0.3 * dirty;
  } else if (w == "heavy") {
    dirty = rate(12000);
    identical = 0.3 * dirty;
  } else if (w == "rewrite-identical") {
    dirty = identical = rate(12000);
  } else {
    throw std::invalid_argument("unknown workload '" + w + "'");
  }
}

double FittedQuantity::evaluate(const FitFeatures& x) const {
  double y = 0;
  for (int i = 0; i < kFitFeatures; ++i) y += coefficients[size_t(i)] * x[size_t(i)];
  return y;
}

namespace {

struct Run {
  FitFeatures x;
  double total_s, downtime_s, cpu_s;
};

FittedQuantity fit_quantity(const std::vector<Run>& runs, double Run::*field,
                            const std::string& what) {
  constexpr size_t k = kFitFeatures;
  std::vector<std::vector<double>> a(k, std::vector<double>(k, 0.0));
  std::vector<double> b(k, 0.0);
  for (const auto& r : runs)
    for (size_t i = 0; i < k; ++i) {
      b[i] += r.x[i] * (r.*field);
      for (size_t j = 0; j < k; ++j) a[i][j] += r.x[i] * r.x[j];
    }
  if (!solve_linear_system(a, b)) throw std::runtime_error("fit of " + what + " is singular");
  FittedQuantity q;
  std::copy(b.begin(), b.end(), q.coefficients.begin());
  double se = 0;
  std::vector<double> pct;
  for (const auto& r : runs) {
    const double pred = q.evaluate(r.x);
    const double y = r.*field;
    se += (pred - y) * (pred - y);
    if (y > 0) pct.push_back(std::fabs(pred - y) / y * 100);
  }
  q.rmse = std::sqrt(se / double(runs.size()));
  q.median_abs_pct = median(pct);
  q.max_abs_pct = pct.empty() ? 0 : *std::max_element(pct.begin(), pct.end());
  return q;
}

double cap_gbps(const std::string& cap) {
  if (cap == "unlimited") return 0;
  if (cap.size() > 1 && cap.back() == 'G') return std::stod(cap.substr(0, cap.size() - 1));
  throw std::runtime_error("unknown cap '" + cap + "'");
}

}  // namespace

MigrationFit fit_migration_runs(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  const auto doc = nlohmann::json::parse(in);
  std::map<std::string, std::vector<Run>> by_mode;
  for (const auto& r : doc.at("runs")) {
    if (!r.value("ok", false)) continue;
    if (r["total_ms"].is_null() || r["downtime_ms"].is_null() || r["cpu_total_s"].is_null())
      continue;
    double dirty = 0, identical = 0;
    workload_rates(r.at("workload").get<std::string>(), dirty, identical);
    Run run;
    run.x = migration_features(r.at("size_mib").get<double>() / 1024.0,
                               cap_gbps(r.at("cap").get<std::string>()), dirty, identical);
    run.total_s = r["total_ms"].get<double>() / 1000.0;
    run.downtime_s = r["downtime_ms"].get<double>() / 1000.0;
    run.cpu_s = r["cpu_total_s"].get<double>();
    by_mode[r.at("mode").get<std::string>()].push_back(run);
  }
  MigrationFit fit;
  fit.source = path.string();
  for (const auto& [mode, runs] : by_mode) {
    if (runs.size() < 2 * kFitFeatures)
      throw std::runtime_error("mode " + mode + ": only " + std::to_string(runs.size()) + " runs");
    ModeFit m;
    m.mode = mode;
    m.runs = static_cast<int>(runs.size());
    m.total_s = fit_quantity(runs, &Run::total_s, mode + " total time");
    m.downtime_s = fit_quantity(runs, &Run::downtime_s, mode + " downtime");
    m.cpu_s = fit_quantity(runs, &Run::cpu_s, mode + " CPU");
    fit.modes.push_back(m);
  }
  if (fit.modes.empty()) throw std::runtime_error(path.string() + ": no successful runs");
  return fit;
}

nlohmann::json fit_to_json(const MigrationFit& fit) {
  nlohmann::json j;
  j["source"] = fit.source;
  j["features"] = {"1", "ram_gib", "ram_gib_per_link_gbps", "dirty_mibps", "identical_mibps"};
  for (const auto& m : fit.modes) {
    nlohmann::json mj = {{"mode", m.mode}, {"runs", m.runs}};
    for (auto [name, q] : {std::pair{"total_s", &m.total_s}, std::pair{"downtime_s", &m.downtime_s},
                           std::pair{"cpu_s", &m.cpu_s}})
      mj[name] = {{"coefficients", q->coefficients},
                  {"rmse", q->rmse},
                  {"median_abs_pct", q->median_abs_pct},
                  {"max_abs_pct", q->max_abs_pct}};
    j["modes"].push_back(mj);
  }
  return j;
}

MeasuredMigrationCost::MeasuredMigrationCost(ModeFit fit, const std::string& workload,
                                             double link_gbps, bool use_measured_cpu)
    : fit_(std::move(fit)), workload_(workload), link_gbps_(link_gbps),
      use_measured_cpu_(use_measured_cpu) {
  workload_rates(workload, dirty_, identical_);
}

FitFeatures MeasuredMigrationCost::features(const Vm& vm) const {
  return migration_features(vm.ram_mb / 1024.0, link_gbps_, dirty_, identical_);
}

double MeasuredMigrationCost::time_s(const Vm& vm, const Host&) const {
  // A linear fit can go below what any run took; floor it at 50 ms.
  return std::max(0.05, fit_.total_s.evaluate(features(vm)));
}

MigrationCost MeasuredMigrationCost::cost(const Vm& vm, const Host& src, const Host& dst) const {
  MigrationCost c;
  const auto x = features(vm);
  c.total_s = time_s(vm, dst);
  c.downtime_s = std::clamp(fit_.downtime_s.evaluate(x), 0.0, c.total_s);
  // The runs do not measure how much slower the guest ran: keep CloudSim's 10 %.
  c.vm_degradation = 0.1;
  if (use_measured_cpu_) {
    // CPU seconds of both QEMUs and daemons, split evenly, spread over the
    // migration, one core-second = one PE-second of the host.
    const double cpu = std::max(0.0, fit_.cpu_s.evaluate(x));
    c.src_mips = 0.5 * cpu / c.total_s * src.pe_mips;
    c.dst_mips = 0.5 * cpu / c.total_s * dst.pe_mips;
  } else {
    c.dst_fraction = 0.1;
  }
  return c;
}

std::string MeasuredMigrationCost::name() const {
  return "measured " + fit_.mode + " (" + workload_ + ", " + std::to_string(link_gbps_) +
         " Gbit/s" + (use_measured_cpu_ ? ", measured CPU" : ", CloudSim CPU") + ")";
}

}  // namespace mm::cluster
