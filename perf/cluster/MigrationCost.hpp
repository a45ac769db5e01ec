// What one live migration costs the cluster, as a pluggable model: how long
// it takes, how long the VM is stopped, what it takes from the VM and adds
// to the two hosts' CPUs. CloudSimMigrationCost is the paper's model (scaled
// for the sweeps); MeasuredMigrationCost evaluates a MigrationFit of perf/e2e
// runs (see MigrationFit.hpp).
#pragma once

#include <string>

#include "perf/cluster/ClusterModel.hpp"

namespace mm::cluster {

struct MigrationCost {
  double total_s = 0;
  double downtime_s = 0;  // part of total_s during which the VM gets nothing
  // During total_s the VM receives (1 - vm_degradation) of its share on the
  // source; the destination spends dst_fraction of the VM's demand plus
  // dst_mips, the source src_mips on top of the VM.
  double vm_degradation = 0;
  double dst_fraction = 0;
  double dst_mips = 0;
  double src_mips = 0;
};

class MigrationCostModel {
 public:
  virtual ~MigrationCostModel() = default;
  virtual MigrationCost cost(const Vm& vm, const Host& src, const Host& dst) const = 0;
  // Used by the LR/LRR detectors to look one migration ahead.
  virtual double time_s(const Vm& vm, const Host& host) const = 0;
  virtual std::string name() const = 0;
};

// CloudSim: RAM / (half the destination's bandwidth), 10 % of the VM's MIPS
// lost during the move and 10 % of it charged to the destination
// (PowerDatacenter, VmSchedulerTimeShared). time_factor, downtime and
// cpu_factor (scales both 10 %) are the sweep's knobs; 1, 0, 1 is CloudSim.
class CloudSimMigrationCost final : public MigrationCostModel {
 public:
  explicit CloudSimMigrationCost(double time_factor = 1, double downtime_s = 0,
                                 double cpu_factor = 1)
      : time_factor_(time_factor), downtime_s_(downtime_s), cpu_factor_(cpu_factor) {}
  MigrationCost cost(const Vm& vm, const Host& src, const Host& dst) const override;
  double time_s(const Vm& vm, const Host& host) const override;
  std::string name() const override;
  double time_factor() const { return time_factor_; }
  double downtime_s() const { return downtime_s_; }
  double cpu_factor() const { return cpu_factor_; }
  static double cloudsim_seconds(int ram_mb, long host_bw) {
    return ram_mb / (static_cast<double>(host_bw) / (2 * 8000));
  }

 private:
  double time_factor_, downtime_s_, cpu_factor_;
};

}  // namespace mm::cluster
