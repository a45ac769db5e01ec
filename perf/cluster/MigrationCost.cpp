#include "perf/cluster/MigrationCost.hpp"

#include <cstdio>

namespace mm::cluster {

double CloudSimMigrationCost::time_s(const Vm& vm, const Host& host) const {
  return time_factor_ * cloudsim_seconds(vm.ram_mb, host.bw);
}

MigrationCost CloudSimMigrationCost::cost(const Vm& vm, const Host&, const Host& dst) const {
  MigrationCost c;
  c.total_s = time_s(vm, dst);
  c.downtime_s = downtime_s_ < c.total_s ? downtime_s_ : c.total_s;
  c.vm_degradation = 0.1 * cpu_factor_;
  c.dst_fraction = 0.1 * cpu_factor_;
  return c;
}

std::string CloudSimMigrationCost::name() const {
  char buf[96];
  std::snprintf(buf, sizeof buf, "cloudsim x%g downtime %gs cpu x%g", time_factor_, downtime_s_,
                cpu_factor_);
  return buf;
}

}  // namespace mm::cluster
