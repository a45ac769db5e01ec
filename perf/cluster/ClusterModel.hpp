// The simulated data center: host and VM types (CloudSim's PlanetLab example
// constants), hosts, VMs with their traces and utilization histories, and the
// per-host sums the policies read. Plain data, mutated by the simulator.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <span>
#include <vector>

#include "perf/cluster/PlanetLabTrace.hpp"
#include "perf/cluster/PowerModel.hpp"

namespace mm::cluster {

struct HostType {
  double mips_per_pe;
  int pes;
  int ram_mb;
  long bw;  // CloudSim units: 1000000 = 1 Gbit/s
  SpecPowerModel power;
  double total_mips() const { return mips_per_pe * pes; }
};

struct VmType {
  double mips;
  int ram_mb;
  long bw;
};

// CloudSim's power examples (their Constants class): two HP ProLiant ML110 hosts
// (G4: 2 x 1860 MIPS, G5: 2 x 2660 MIPS, 4 GB, 1 Gbit/s) and four VM types
// (2500/2000/1000/500 MIPS, 870/1740/1740/613 MB, 100 Mbit/s).
std::vector<HostType> cloudsim_host_types();
std::vector<VmType> cloudsim_vm_types();

// Utilization history kept per VM, newest first, at most 30 samples
// (CloudSim's PowerGuestEntity.HISTORY_LENGTH).
inline constexpr int kHistoryLength = 30;

struct Vm {
  int type = 0;
  double mips = 0;
  int ram_mb = 0;
  long bw = 0;
  // What the VM holds of its host's RAM and bandwidth. CloudSim's PlanetLab
  // example gives cloudlets a null RAM and bandwidth utilization model, so
  // after creation a VM requests 0 of both (Vm.getCurrentRequestedRam):
  // RAM only limits the first placement. ClusterModel::ram_binds keeps them.
  int ram_demand_mb = 0;
  long bw_demand = 0;
  const VmTrace* trace = nullptr;
  int host = -1;
  double requested_mips = 0;  // demand at the current sample
  std::array<float, kHistoryLength> history{};  // ring, see history_at
  int history_len = 0;
  int history_head = 0;  // index of the newest sample
  bool moving = false;   // planned to migrate at the current decision

  double utilization() const { return requested_mips / mips; }
  double history_at(int i) const {  // i = 0 is the newest sample
    return history[static_cast<size_t>((history_head - i + kHistoryLength) % kHistoryLength)];
  }
  void push_history(double u);
};

struct Host {
  int type = 0;
  double pe_mips = 0;
  double total_mips = 0;
  int ram_mb = 0;
  long bw = 0;
  std::vector<int> vms;  // in arrival order (the order CloudSim's guest list keeps)
  // Sums over vms, kept by ClusterModel::attach / detach.
  double requested_mips = 0;  // uncapped demand
  double capped_mips = 0;     // demand with each VM capped at one PE's MIPS
  int ram_used = 0;
  long bw_used = 0;
  // Utilization at the start of the decision (CloudSim's utilizationMips
  // field, not touched while a migration plan is being made).
  double decision_utilization = 0;
  int nonempty_pos = -1;  // index in ClusterModel::nonempty_hosts, -1 when empty
  // The host's utilization history (see ClusterModel::host_history), kept
  // by attach / detach so detectors do not rebuild it from the VMs.
  std::array<double, kHistoryLength> history_sum{};
  int history_len = 0;

  // MIPS the time-shared over-subscribing scheduler hands out.
  double allocated_mips() const { return capped_mips < total_mips ? capped_mips : total_mips; }
  double available_mips() const { return total_mips - allocated_mips(); }
};

class ClusterModel {
 public:
  std::vector<HostType> host_types;
  std::vector<Host> hosts;
  std::vector<Vm> vms;
  // false: CloudSim's behaviour (see Vm::ram_demand_mb); true: a VM holds its
  // RAM and bandwidth wherever it runs.
  bool ram_binds = false;

  // Hosts with VMs (any order) and, per host type, the empty ones by index:
  // kept by attach / detach for the placement's candidate scan.
  std::vector<int> nonempty_hosts;
  std::vector<std::set<int>> empty_hosts_by_type;

  // Called once the VMs are created: drops the creation-time RAM and
  // bandwidth reservations unless ram_binds.
  void finish_creation();

  void add_host(int type);  // host_types must be set first
  void add_vm(int type, const VmTrace* trace);

  // Resource check of CloudSim's Host.isSuitableForGuest: one PE holds the
  // VM's demand, and MIPS, RAM and bandwidth are left.
  bool fits(int host, int vm) const;
  void attach(int host, int vm);
  void detach(int host, int vm);
  // Recomputes every host's sums from its VM list (after demands change).
  void refresh_sums();
  // Demands at sample + alpha of the way to the next one (the trace is
  // linearly interpolated, as CloudSim's UtilizationModelPlanetLabInMemory).
  void set_demands(int sample, double alpha = 0);
  // Recomputes the hosts' history sums after the VMs' histories changed.
  void refresh_history_sums();

  // The host's utilization history, newest first: the sum of its VMs'
  // histories weighted by VM MIPS / host MIPS (PowerHost.getUtilizationHistory).
  // Returns the number of samples written into out (at most kHistoryLength).
  int host_history(int host, std::span<double> out) const;
  double requested_utilization(int host) const {
    return hosts[size_t(host)].requested_mips / hosts[size_t(host)].total_mips;
  }
};

}  // namespace mm::cluster
