// Which VM leaves an overloaded host (CloudSim's selection policies):
// minimum migration time (least RAM), maximum correlation of its history
// with the other VMs' (R^2 of a multiple regression, MMT as fallback),
// minimum utilization, random. VMs already planned to move are skipped.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "perf/cluster/ClusterModel.hpp"

namespace mm::cluster {

class VmSelector {
 public:
  virtual ~VmSelector() = default;
  // A VM on host, or -1 when none can move.
  virtual int select(const ClusterModel& model, int host) = 0;
  virtual std::string name() const = 0;
};

class MinimumMigrationTimeSelector final : public VmSelector {
 public:
  int select(const ClusterModel& model, int host) override;
  std::string name() const override { return "mmt"; }
};

class MaximumCorrelationSelector final : public VmSelector {
 public:
  int select(const ClusterModel& model, int host) override;
  std::string name() const override { return "mc"; }

 private:
  MinimumMigrationTimeSelector fallback_;
};

class MinimumUtilizationSelector final : public VmSelector {
 public:
  int select(const ClusterModel& model, int host) override;
  std::string name() const override { return "mu"; }
};

class RandomSelector final : public VmSelector {
 public:
  explicit RandomSelector(uint64_t seed) : rng_(seed) {}
  int select(const ClusterModel& model, int host) override;
  std::string name() const override { return "rs"; }

 private:
  std::mt19937_64 rng_;
};

}  // namespace mm::cluster
