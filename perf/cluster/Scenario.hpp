// Builds what one run needs: the cluster of CloudSim's PlanetLab example
// (VM i of n gets type i / ceil(n / 4), host i type i % 2), a scaled-up
// cluster that reuses the traces, and the policies by their paper names
// ("thr", "iqr", "mad", "lr", "lrr"; "mmt", "mc", "mu", "rs").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "perf/cluster/ClusterModel.hpp"
#include "perf/cluster/MigrationCost.hpp"
#include "perf/cluster/OverloadDetector.hpp"
#include "perf/cluster/VmSelector.hpp"

namespace mm::cluster {

ClusterModel planetlab_cluster(const std::vector<VmTrace>& traces, int hosts);

// n_vms VMs whose traces are drawn with replacement (seeded) from the pool,
// e.g. all ten days' files; same type and host rules as above.
ClusterModel sampled_cluster(const std::vector<VmTrace>& pool, int n_vms, int hosts,
                             uint64_t seed);

// The paper's default safety parameters: THR 0.8, IQR 1.5, MAD 2.5, LR/LRR 1.2.
double default_parameter(const std::string& detector);

std::unique_ptr<OverloadDetector> make_detector(const std::string& name, double parameter,
                                                std::shared_ptr<const MigrationCostModel> cost,
                                                bool weighted_regression = false);
std::unique_ptr<VmSelector> make_selector(const std::string& name, uint64_t seed = 1);

}  // namespace mm::cluster
