// mm-cluster-sim: runs the consolidation simulator on PlanetLab days and
// writes one JSON object per run (JSON lines) for the report script.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "perf/cluster/ClusterSimulator.hpp"
#include "perf/cluster/MigrationFit.hpp"
#include "perf/cluster/Scenario.hpp"

using namespace mm::cluster;

namespace {

nlohmann::json to_json(const SimulationMetrics& m, bool series) {
  nlohmann::json j = {{"energy_kwh", m.energy_kwh},
                      {"slatah", m.slatah},
                      {"pdm", m.pdm},
                      {"slatah_per_host", m.slatah_per_host},
                      {"pdm_per_vm", m.pdm_per_vm},
                      {"slav", m.slav},
                      {"esv", m.esv},
                      {"migrations", m.migrations},
                      {"migrations_clamped", m.migrations_clamped},
                      {"mean_utilization", m.mean_utilization},
                      {"p95_utilization", m.p95_utilization},
                      {"mean_active_hosts", m.mean_active_hosts},
                      {"max_active_hosts", m.max_active_hosts},
                      {"vms_not_placed", m.vms_not_placed},
                      {"vms_dropped_idle", m.vms_dropped_idle},
                      {"mean_migration_s", m.mean_migration_s},
                      {"wall_s", m.wall_s}};
  if (series) j["active_hosts"] = m.active_hosts;
  return j;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MemoryMotion cluster simulator: dynamic VM consolidation on PlanetLab traces"};
  std::string traces_root, days = "20110303", detectors = "lr", selectors = "mmt";
  std::string parameters, time_factors = "1", downtimes = "0", cpu_factors = "1";
  std::string measured, modes, out_path = "-", sla = "cloudsim", workload = "typical";
  int hosts = 800, vms = 0, cells = 1;
  uint64_t seed = 1;
  double link_gbps = 1;
  bool series = false, weighted = false, fit_only = false, ram_binds = false;
  bool listing_order = false, cloudsim_clock = false;
  bool cloudsim_cpu = false;
  app.add_option("--traces", traces_root, "folder holding the day folders (planetlab/)")->required();
  app.add_option("--days", days, "comma-separated day folders, or 'all'");
  app.add_option("--detectors", detectors, "thr,iqr,mad,lr,lrr");
  app.add_option("--selectors", selectors, "mmt,mc,mu,rs");
  app.add_option("--parameters", parameters,
                 "comma-separated safety parameters / thresholds (default: the paper's)");
  app.add_option("--time-factors", time_factors, "CloudSim migration time multipliers");
  app.add_option("--downtimes", downtimes, "downtime seconds added to the CloudSim model");
  app.add_option("--cpu-factors", cpu_factors, "multipliers of CloudSim's 10 % CPU cost");
  app.add_option("--measured", measured, "perf/e2e results.json: use the fitted measured models");
  app.add_option("--modes", modes, "measured modes to run (default: all in the fit)");
  app.add_option("--workload", workload, "measured workload class: idle,typical,heavy");
  app.add_option("--link-gbps", link_gbps, "link rate for the measured models");
  app.add_flag("--cloudsim-cpu", cloudsim_cpu,
               "measured models: CloudSim's 10 % CPU charges instead of the measured CPU seconds");
  app.add_flag("--fit-only", fit_only, "print the measured fit as JSON and exit");
  app.add_option("--hosts", hosts, "number of hosts");
  app.add_option("--vms", vms, "sample this many VMs from the days' traces (0: the day's files)");
  app.add_option("--cells", cells,
                 "split --vms / --hosts into this many independent cells (placement within a cell)");
  app.add_option("--seed", seed, "seed for sampling and RS");
  app.add_option("--sla", sla, "cloudsim or physical SLA accounting");
  app.add_flag("--weighted-regression", weighted, "LR/LRR with the paper's tricube weights");
  app.add_flag("--listing-order", listing_order,
               "take a day's files in the order the file system lists them (as CloudSim does) instead of by name");
  app.add_flag("--cloudsim-clock", cloudsim_clock,
               "CloudSim's clock: decide 0.1 s after each sample, remove for good a VM that "
               "requests 0 MIPS then (CloudSim 3's getCompletedVms), account neither the first "
               "nor the last interval; for the validation");
  app.add_flag("--ram-binds", ram_binds,
               "VMs keep their RAM and bandwidth after creation (CloudSim's example drops them)");
  app.add_flag("--series", series, "include active hosts per interval");
  app.add_option("--out", out_path, "JSON lines output ('-': stdout)");
  CLI11_PARSE(app, argc, argv);

  try {
    std::vector<std::shared_ptr<const MigrationCostModel>> costs;
    std::optional<MigrationFit> fit;
    if (!measured.empty()) {
      fit = fit_migration_runs(measured);
      if (fit_only) {
        std::cout << fit_to_json(*fit).dump(1) << "\n";
        return 0;
      }
      const auto wanted = split(modes);
      for (const auto& mode : fit->modes)
        if (wanted.empty() || std::find(wanted.begin(), wanted.end(), mode.mode) != wanted.end())
          costs.push_back(
              std::make_shared<MeasuredMigrationCost>(mode, workload, link_gbps, !cloudsim_cpu));
    } else {
      for (const auto& tf : split(time_factors))
        for (const auto& dt : split(downtimes))
          for (const auto& cf : split(cpu_factors))
            costs.push_back(std::make_shared<CloudSimMigrationCost>(std::stod(tf), std::stod(dt),
                                                                   std::stod(cf)));
    }
    std::vector<std::string> day_list = split(days);
    if (days == "all") {
      day_list.clear();
      for (const auto& e : std::filesystem::directory_iterator(traces_root))
        if (e.is_directory()) day_list.push_back(e.path().filename().string());
      std::sort(day_list.begin(), day_list.end());
    }
    std::ofstream file;
    std::ostream* out = &std::cout;
    if (out_path != "-") {
      file.open(out_path, std::ios::app);
      if (!file) throw std::runtime_error("cannot write " + out_path);
      out = &file;
    }
    SimulationConfig config;
    config.sla = sla == "physical" ? SlaAccounting::physical : SlaAccounting::cloudsim;
    config.keep_active_hosts_series = series;
    config.drop_idle_vms = cloudsim_clock;
    config.decision_offset_s = cloudsim_clock ? 0.1 : 0.0;
    config.account_edge_intervals = !cloudsim_clock;

    // With --vms the days' traces form one pool to sample from.
    const FileOrder order = listing_order ? FileOrder::listing : FileOrder::by_name;
    std::vector<std::pair<std::string, std::vector<VmTrace>>> workloads;
    if (vms > 0) {
      std::vector<VmTrace> pool;
      for (const auto& d : day_list) {
        auto t = read_planetlab_day(std::filesystem::path(traces_root) / d, order);
        pool.insert(pool.end(), std::make_move_iterator(t.begin()), std::make_move_iterator(t.end()));
      }
      workloads.emplace_back("sampled", std::move(pool));
    } else {
      for (const auto& d : day_list)
        workloads.emplace_back(d, read_planetlab_day(std::filesystem::path(traces_root) / d, order));
    }
    for (const auto& [day, traces] : workloads)
      for (const auto& cost : costs)
        for (const auto& det : split(detectors)) {
          std::vector<double> params;
          if (parameters.empty()) params.push_back(default_parameter(det));
          else
            for (const auto& p : split(parameters)) params.push_back(std::stod(p));
          for (double p : params)
            for (const auto& sel : split(selectors)) {
              std::vector<SimulationMetrics> per_cell;
              std::vector<int> cell_hosts, cell_vms;
              const int n_cells = vms > 0 ? std::max(cells, 1) : 1;
              for (int c = 0; c < n_cells; ++c) {
                const int h = hosts / n_cells + (c < hosts % n_cells ? 1 : 0);
                const int v = vms / n_cells + (c < vms % n_cells ? 1 : 0);
                ClusterModel model = vms > 0 ? sampled_cluster(traces, v, h, seed + uint64_t(c))
                                             : planetlab_cluster(traces, hosts);
                model.ram_binds = ram_binds;
                ClusterSimulator sim(config, make_detector(det, p, cost, weighted),
                                     make_selector(sel, seed + uint64_t(c)), cost);
                per_cell.push_back(sim.run(model));
                cell_hosts.push_back(static_cast<int>(model.hosts.size()));
                cell_vms.push_back(static_cast<int>(model.vms.size()));
              }
              const auto m = n_cells == 1 ? per_cell[0] : combine_cells(per_cell, cell_hosts, cell_vms);
              int total_vms = 0, total_hosts = 0;
              for (int c = 0; c < n_cells; ++c) {
                total_vms += cell_vms[size_t(c)];
                total_hosts += cell_hosts[size_t(c)];
              }
              nlohmann::json j = to_json(m, series);
              j["day"] = day;
              j["detector"] = det;
              j["parameter"] = p;
              j["selector"] = sel;
              j["cost_model"] = cost->name();
              j["vms"] = total_vms;
              j["hosts"] = total_hosts;
              j["cells"] = n_cells;
              j["sla_accounting"] = sla;
              j["ram_binds"] = ram_binds;
              j["cloudsim_clock"] = cloudsim_clock;
              j["file_order"] = listing_order ? "listing" : "name";
              if (auto* c = dynamic_cast<const CloudSimMigrationCost*>(cost.get())) {
                j["time_factor"] = c->time_factor();
                j["downtime_s"] = c->downtime_s();
                j["cpu_factor"] = c->cpu_factor();
              }
              if (auto* c = dynamic_cast<const MeasuredMigrationCost*>(cost.get())) {
                j["mode"] = c->mode();
                j["workload"] = workload;
                j["link_gbps"] = link_gbps;
                j["cpu_model"] = cloudsim_cpu ? "cloudsim" : "measured";
              }
              *out << j.dump() << "\n";
              out->flush();
            }
        }
  } catch (const std::exception& e) {
    std::cerr << "mm-cluster-sim: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
