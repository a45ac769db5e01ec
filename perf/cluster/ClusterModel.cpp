#include "perf/cluster/ClusterModel.hpp"

#include <algorithm>
#include <stdexcept>

namespace mm::cluster {

std::vector<HostType> cloudsim_host_types() {
  return {HostType{1860, 2, 4096, 1000000, SpecPowerModel::hp_ml110_g4()},
          HostType{2660, 2, 4096, 1000000, SpecPowerModel::hp_ml110_g5()}};
}

std::vector<VmType> cloudsim_vm_types() {
  return {VmType{2500, 870, 100000}, VmType{2000, 1740, 100000}, VmType{1000, 1740, 100000},
          VmType{500, 613, 100000}};
}

namespace {

void add_history(Host& h, const Vm& v, int sign) {
  const double w = sign * v.mips / h.total_mips;
  for (int i = 0; i < v.history_len; ++i) h.history_sum[size_t(i)] += v.history_at(i) * w;
  if (sign > 0 && v.history_len > h.history_len) h.history_len = v.history_len;
}

}  // namespace

void Vm::push_history(double u) {
  history_head = (history_head + 1) % kHistoryLength;
  history[static_cast<size_t>(history_head)] = static_cast<float>(u);
  if (history_len < kHistoryLength) ++history_len;
}

void ClusterModel::add_host(int type) {
  const HostType& t = host_types.at(static_cast<size_t>(type));
  Host h;
  h.type = type;
  h.pe_mips = t.mips_per_pe;
  h.total_mips = t.total_mips();
  h.ram_mb = t.ram_mb;
  h.bw = t.bw;
  if (empty_hosts_by_type.size() < host_types.size()) empty_hosts_by_type.resize(host_types.size());
  empty_hosts_by_type[size_t(type)].insert(static_cast<int>(hosts.size()));
  hosts.push_back(std::move(h));
}

void ClusterModel::add_vm(int type, const VmTrace* trace) {
  static const auto types = cloudsim_vm_types();
  const VmType& t = types.at(static_cast<size_t>(type));
  Vm v;
  v.type = type;
  v.mips = t.mips;
  v.ram_mb = t.ram_mb;
  v.bw = t.bw;
  v.ram_demand_mb = t.ram_mb;
  v.bw_demand = t.bw;
  v.trace = trace;
  vms.push_back(v);
}

bool ClusterModel::fits(int host, int vm) const {
  const Host& h = hosts[size_t(host)];
  const Vm& v = vms[size_t(vm)];
  return h.pe_mips >= v.requested_mips && h.available_mips() >= v.requested_mips &&
         h.ram_used + v.ram_demand_mb <= h.ram_mb && h.bw_used + v.bw_demand <= h.bw;
}

void ClusterModel::attach(int host, int vm) {
  Host& h = hosts[size_t(host)];
  Vm& v = vms[size_t(vm)];
  if (h.vms.empty()) {
    empty_hosts_by_type[size_t(h.type)].erase(host);
    h.nonempty_pos = static_cast<int>(nonempty_hosts.size());
    nonempty_hosts.push_back(host);
  }
  h.vms.push_back(vm);
  add_history(h, v, +1);
  h.requested_mips += v.requested_mips;
  h.capped_mips += std::min(v.requested_mips, h.pe_mips);
  h.ram_used += v.ram_demand_mb;
  h.bw_used += v.bw_demand;
  v.host = host;
}

void ClusterModel::detach(int host, int vm) {
  Host& h = hosts[size_t(host)];
  Vm& v = vms[size_t(vm)];
  auto it = std::find(h.vms.begin(), h.vms.end(), vm);
  if (it == h.vms.end()) throw std::logic_error("detach: VM not on host");
  h.vms.erase(it);
  add_history(h, v, -1);
  h.requested_mips -= v.requested_mips;
  h.capped_mips -= std::min(v.requested_mips, h.pe_mips);
  h.ram_used -= v.ram_demand_mb;
  h.bw_used -= v.bw_demand;
  if (h.vms.empty()) {
    h.requested_mips = h.capped_mips = 0;  // no drift on empty hosts
    h.history_sum.fill(0);
    h.history_len = 0;
    const int last = nonempty_hosts.back();
    nonempty_hosts[size_t(h.nonempty_pos)] = last;
    hosts[size_t(last)].nonempty_pos = h.nonempty_pos;
    nonempty_hosts.pop_back();
    h.nonempty_pos = -1;
    empty_hosts_by_type[size_t(h.type)].insert(host);
  }
}

void ClusterModel::finish_creation() {
  if (ram_binds) return;
  for (Vm& v : vms) {
    v.ram_demand_mb = 0;
    v.bw_demand = 0;
  }
  for (Host& h : hosts) {
    h.ram_used = 0;
    h.bw_used = 0;
  }
}

void ClusterModel::refresh_sums() {
  for (Host& h : hosts) {
    h.requested_mips = h.capped_mips = 0;
    for (int vm : h.vms) {
      const double r = vms[size_t(vm)].requested_mips;
      h.requested_mips += r;
      h.capped_mips += std::min(r, h.pe_mips);
    }
  }
}

void ClusterModel::set_demands(int sample, double alpha) {
  for (Vm& v : vms) {
    const double u0 = v.trace->utilization(sample);
    v.requested_mips = (u0 + (v.trace->utilization(sample + 1) - u0) * alpha) * v.mips;
  }
  refresh_sums();
}

void ClusterModel::refresh_history_sums() {
  for (Host& h : hosts) {
    h.history_sum.fill(0);
    h.history_len = 0;
    for (int vm : h.vms) add_history(h, vms[size_t(vm)], +1);
  }
}

int ClusterModel::host_history(int host, std::span<double> out) const {
  const Host& h = hosts[size_t(host)];
  const int n = std::min<int>(h.history_len, static_cast<int>(out.size()));
  std::copy_n(h.history_sum.begin(), n, out.begin());
  return n;
}

}  // namespace mm::cluster
