#include "perf/cluster/Scenario.hpp"

#include <cmath>
#include <random>
#include <stdexcept>

namespace mm::cluster {

namespace {

ClusterModel empty_cluster(int hosts) {
  ClusterModel m;
  m.host_types = cloudsim_host_types();
  m.hosts.reserve(size_t(hosts));
  for (int i = 0; i < hosts; ++i) m.add_host(i % 2);
  return m;
}

int vm_type(int i, int n) {
  // CloudSim's power examples create the VMs in contiguous blocks of the four types.
  return i / static_cast<int>(std::ceil(double(n) / 4));
}

}  // namespace

ClusterModel planetlab_cluster(const std::vector<VmTrace>& traces, int hosts) {
  ClusterModel m = empty_cluster(hosts);
  const int n = static_cast<int>(traces.size());
  m.vms.reserve(size_t(n));
  for (int i = 0; i < n; ++i) m.add_vm(vm_type(i, n), &traces[size_t(i)]);
  return m;
}

ClusterModel sampled_cluster(const std::vector<VmTrace>& pool, int n_vms, int hosts,
                             uint64_t seed) {
  if (pool.empty()) throw std::invalid_argument("sampled_cluster: empty trace pool");
  ClusterModel m = empty_cluster(hosts);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  m.vms.reserve(size_t(n_vms));
  for (int i = 0; i < n_vms; ++i) m.add_vm(vm_type(i, n_vms), &pool[pick(rng)]);
  return m;
}

double default_parameter(const std::string& d) {
  if (d == "thr") return 0.8;
  if (d == "iqr") return 1.5;
  if (d == "mad") return 2.5;
  if (d == "lr" || d == "lrr") return 1.2;
  throw std::invalid_argument("unknown detector '" + d + "' (thr, iqr, mad, lr, lrr)");
}

std::unique_ptr<OverloadDetector> make_detector(const std::string& name, double parameter,
                                                std::shared_ptr<const MigrationCostModel> cost,
                                                bool weighted) {
  if (name == "thr") return std::make_unique<StaticThresholdDetector>(parameter);
  if (name == "iqr")
    return std::make_unique<AdaptiveThresholdDetector>(AdaptiveThresholdDetector::Spread::iqr,
                                                       parameter);
  if (name == "mad")
    return std::make_unique<AdaptiveThresholdDetector>(AdaptiveThresholdDetector::Spread::mad,
                                                       parameter);
  if (name == "lr" || name == "lrr") {
    // PowerVmAllocationPolicyMigrationLocalRegression.getMaximumVmMigrationTime:
    // the largest RAM on the host, at the model's migration speed.
    auto max_time = [cost](const ClusterModel& m, int host) {
      double t = 0;
      for (int vm : m.hosts[size_t(host)].vms)
        t = std::max(t, cost->time_s(m.vms[size_t(vm)], m.hosts[size_t(host)]));
      return t;
    };
    return std::make_unique<LocalRegressionDetector>(name == "lrr", parameter, kSampleSeconds,
                                                     max_time, weighted);
  }
  throw std::invalid_argument("unknown detector '" + name + "' (thr, iqr, mad, lr, lrr)");
}

std::unique_ptr<VmSelector> make_selector(const std::string& name, uint64_t seed) {
  if (name == "mmt") return std::make_unique<MinimumMigrationTimeSelector>();
  if (name == "mc") return std::make_unique<MaximumCorrelationSelector>();
  if (name == "mu") return std::make_unique<MinimumUtilizationSelector>();
  if (name == "rs") return std::make_unique<RandomSelector>(seed);
  throw std::invalid_argument("unknown VM selection '" + name + "' (mmt, mc, mu, rs)");
}

}  // namespace mm::cluster
