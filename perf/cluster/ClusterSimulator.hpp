// Discrete-time simulation of dynamic VM consolidation, one decision every
// scheduling interval (300 s), as CloudSim's PowerDatacenter runs it: detect
// overloaded hosts, pick VMs off them, place them power-aware best fit, then
// empty the least utilized hosts where all their VMs fit elsewhere. Within an
// interval each host's state changes when a migration touching it ends; the
// metrics integrate over those segments (see README.md for what differs from
// CloudSim's event-driven clock).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "perf/cluster/ClusterModel.hpp"
#include "perf/cluster/MigrationCost.hpp"
#include "perf/cluster/OverloadDetector.hpp"
#include "perf/cluster/VmSelector.hpp"

namespace mm::cluster {

enum class SlaAccounting {
  // CloudSim's: during a migration the destination records the VM's whole
  // demand as requested but allocates only its 10 %, so every destination
  // counts as overloaded while a VM arrives.
  cloudsim,
  // A host violates only when its demand (overheads included) exceeds it.
  physical,
};

struct SimulationConfig {
  double interval_s = kSampleSeconds;
  // CloudSim's datacenter takes its decisions at 300 k + 0.1 s (its first
  // event is 0.1 s in), where the interpolated trace already leans 0.1 / 300
  // towards the next sample: a VM at 0 % whose next sample is not 0 still
  // has a demand, so its host is neither off nor skipped by consolidation.
  // 0 (the default) decides on the samples themselves; 0.1 is CloudSim's.
  double decision_offset_s = 0;
  // CloudSim's PowerDatacenter removes for good every VM that is not
  // migrating and requests 0 MIPS at an update (HostDynamicWorkload
  // .getCompletedVms takes it for finished): with the offset above, a VM
  // whose trace is 0 at a sample and at the next. True reproduces CloudSim's
  // numbers; false keeps idle VMs, as a real data center does.
  bool drop_idle_vms = false;
  // CloudSim accounts neither the first interval (its first update, at
  // 300.1 s, finds every host's previous utilization 0 and charges nothing
  // from 0) nor the last (the next update would be past its 86400 s limit).
  // True (the default) accounts every interval.
  bool account_edge_intervals = true;
  int samples = kSamplesPerDay;
  SlaAccounting sla = SlaAccounting::cloudsim;
  bool keep_active_hosts_series = true;
};

struct SimulationMetrics {
  double energy_kwh = 0;
  double slatah = 0;        // SLA time per active host, CloudSim's sum / sum
  double pdm = 0;           // degradation due to migration, CloudSim's sum / sum
  double slatah_per_host = 0;  // the paper's mean of per-host ratios
  double pdm_per_vm = 0;       // the paper's mean of per-VM ratios
  double slav = 0;          // slatah * pdm
  double esv = 0;           // energy_kwh * slav
  long migrations = 0;
  long migrations_clamped = 0;  // longer than an interval, cut to one
  double mean_utilization = 0;  // of active hosts, over host-intervals
  double p95_utilization = 0;
  double mean_active_hosts = 0;
  int max_active_hosts = 0;
  int vms_not_placed = 0;  // initial placement failures (CloudSim drops them)
  int vms_dropped_idle = 0;  // removed by drop_idle_vms
  double mean_migration_s = 0;
  double wall_s = 0;
  std::vector<int> active_hosts;  // per interval

  // The sums the ratios come from, so runs on independent cells of a large
  // cluster combine exactly (combine_cells).
  double active_host_s = 0, violation_s = 0;
  double requested_mips_s = 0, migration_loss_mips_s = 0;
  double migration_s_total = 0;
  double utilization_sum = 0;
  long utilization_count = 0;
  std::vector<long> utilization_histogram;  // 0.1 % bins of active hosts' utilization
};

// Metrics of a cluster made of independent cells (each placing only within
// itself): sums of energy, migrations and active hosts, ratios of the sums.
// The per-host and per-VM means are weighted by the cells' host / VM counts.
SimulationMetrics combine_cells(const std::vector<SimulationMetrics>& cells,
                                const std::vector<int>& hosts_per_cell,
                                const std::vector<int>& vms_per_cell);

class ClusterSimulator {
 public:
  ClusterSimulator(SimulationConfig config, std::unique_ptr<OverloadDetector> detector,
                   std::unique_ptr<VmSelector> selector,
                   std::shared_ptr<const MigrationCostModel> cost);

  // Runs one day on the model (hosts and VMs with traces, nothing placed).
  SimulationMetrics run(ClusterModel& model);

  // Power-aware best fit (PowerVmAllocationPolicyMigrationAbstract
  // .findHostForGuest): the host whose power grows least, among those the VM
  // fits on and that the detector would not call overloaded with it. -1 when
  // none. consider_empty false skips empty hosts (when all are excluded).
  int find_host(ClusterModel& model, int vm, const std::vector<char>& excluded,
                bool consider_empty = true) const;

  // Takes the hosts' utilization (and power) at the start of a decision,
  // which the placement's power baseline uses while the plan changes them.
  void set_decision_state(ClusterModel& model);

  struct Migration {
    int vm, src, dst;
    MigrationCost cost;
  };
  // One decision at the current sample (demands and histories set);
  // returns the migrations and leaves the model in the planned placement.
  std::vector<Migration> plan(ClusterModel& model);

 private:
  void place_initially(ClusterModel& model, SimulationMetrics& m);
  void account_interval(const ClusterModel& model, int sample,
                        const std::vector<Migration>& migrations);

  SimulationConfig config_;
  std::unique_ptr<OverloadDetector> detector_;
  std::unique_ptr<VmSelector> selector_;
  std::shared_ptr<const MigrationCostModel> cost_;

  std::vector<double> host_decision_watts_;  // power at the decision's utilization
  mutable std::vector<int> scan_;

  // Accumulators of one run.
  double energy_ws_ = 0;
  double active_s_ = 0, violation_s_ = 0;
  std::vector<double> host_active_s_, host_violation_s_;
  double requested_mips_s_ = 0, migration_loss_mips_s_ = 0;
  std::vector<double> vm_requested_, vm_migration_loss_;
};

}  // namespace mm::cluster
