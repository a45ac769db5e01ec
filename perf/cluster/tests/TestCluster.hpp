// Small hand-made clusters for the tests: constant traces, CloudSim's host
// and VM types.
#pragma once

#include <deque>

#include "perf/cluster/ClusterModel.hpp"

namespace mm::cluster::testing {

// Traces live as long as the holder; deque keeps their addresses stable.
struct TraceHolder {
  std::deque<VmTrace> traces;
  const VmTrace* constant(int percent) {
    VmTrace t;
    t.name = "const" + std::to_string(percent);
    t.percent.assign(kSamplesPerDay + 1, static_cast<uint8_t>(percent));
    traces.push_back(std::move(t));
    return &traces.back();
  }
  const VmTrace* series(std::vector<uint8_t> p) {
    VmTrace t;
    t.name = "series";
    p.resize(kSamplesPerDay + 1, p.empty() ? 0 : p.back());
    t.percent = std::move(p);
    traces.push_back(std::move(t));
    return &traces.back();
  }
};

inline ClusterModel cluster_with_hosts(std::initializer_list<int> types) {
  ClusterModel m;
  m.host_types = cloudsim_host_types();
  for (int t : types) m.add_host(t);
  return m;
}

// Gives the VM a history (newest last in `values`) and sets its demand to
// the newest value.
inline void give_history(Vm& v, std::initializer_list<double> oldest_to_newest) {
  for (double u : oldest_to_newest) v.push_history(u);
  v.requested_mips = v.history_at(0) * v.mips;
}

}  // namespace mm::cluster::testing
