#include "perf/cluster/VmSelector.hpp"

#include <limits>

#include "perf/cluster/Statistics.hpp"

namespace mm::cluster {

int MinimumMigrationTimeSelector::select(const ClusterModel& model, int host) {
  int best = -1;
  int best_ram = std::numeric_limits<int>::max();
  for (int vm : model.hosts[size_t(host)].vms) {
    const Vm& v = model.vms[size_t(vm)];
    if (v.moving) continue;
    if (v.ram_mb < best_ram) {
      best_ram = v.ram_mb;
      best = vm;
    }
  }
  return best;
}

int MaximumCorrelationSelector::select(const ClusterModel& model, int host) {
  std::vector<int> candidates;
  for (int vm : model.hosts[size_t(host)].vms)
    if (!model.vms[size_t(vm)].moving) candidates.push_back(vm);
  if (candidates.empty()) return -1;
  int m = kHistoryLength;
  for (int vm : candidates) m = std::min(m, model.vms[size_t(vm)].history_len);
  std::vector<std::vector<double>> series(candidates.size(), std::vector<double>(size_t(m)));
  for (size_t i = 0; i < candidates.size(); ++i)
    for (int t = 0; t < m; ++t)
      series[i][size_t(t)] = model.vms[size_t(candidates[i])].history_at(t);
  // CloudSim starts from Double.MIN_VALUE and keeps index 0 when nothing
  // beats it; any failed regression sends the whole choice to MMT.
  double best_r2 = std::numeric_limits<double>::denorm_min();
  size_t best = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto r2 = multiple_correlation(series, i);
    if (!r2) return fallback_.select(model, host);
    if (*r2 > best_r2) {
      best_r2 = *r2;
      best = i;
    }
  }
  return candidates[best];
}

int MinimumUtilizationSelector::select(const ClusterModel& model, int host) {
  int best = -1;
  double best_u = std::numeric_limits<double>::max();
  for (int vm : model.hosts[size_t(host)].vms) {
    const Vm& v = model.vms[size_t(vm)];
    if (v.moving) continue;
    if (v.utilization() < best_u) {
      best_u = v.utilization();
      best = vm;
    }
  }
  return best;
}

int RandomSelector::select(const ClusterModel& model, int host) {
  std::vector<int> candidates;
  for (int vm : model.hosts[size_t(host)].vms)
    if (!model.vms[size_t(vm)].moving) candidates.push_back(vm);
  if (candidates.empty()) return -1;
  std::uniform_int_distribution<size_t> pick(0, candidates.size() - 1);
  return candidates[pick(rng_)];
}

}  // namespace mm::cluster
