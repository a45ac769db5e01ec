#include "perf/cluster/MigrationCost.hpp"

#include <gtest/gtest.h>

#include "perf/cluster/tests/TestCluster.hpp"

using namespace mm::cluster;
using namespace mm::cluster::testing;

TEST(CloudSimMigrationCost, RamOverHalfTheBandwidth) {
  TraceHolder t;
  auto m = cluster_with_hosts({0, 1});
  for (int type = 0; type < 4; ++type) m.add_vm(type, t.constant(50));
  CloudSimMigrationCost cloudsim;
  // 1 Gbit/s host: 1000000 / 16000 = 62.5 MB/s for the migration.
  EXPECT_NEAR(cloudsim.time_s(m.vms[0], m.hosts[1]), 870 / 62.5, 1e-12);
  EXPECT_NEAR(cloudsim.time_s(m.vms[1], m.hosts[1]), 27.84, 1e-12);
  EXPECT_NEAR(cloudsim.time_s(m.vms[3], m.hosts[0]), 9.808, 1e-12);
  const auto c = cloudsim.cost(m.vms[0], m.hosts[0], m.hosts[1]);
  EXPECT_DOUBLE_EQ(c.vm_degradation, 0.1);
  EXPECT_DOUBLE_EQ(c.dst_fraction, 0.1);
  EXPECT_DOUBLE_EQ(c.downtime_s, 0);
  CloudSimMigrationCost scaled(0.01, 0.5, 2);
  const auto s = scaled.cost(m.vms[0], m.hosts[0], m.hosts[1]);
  EXPECT_NEAR(s.total_s, 0.1392, 1e-12);
  EXPECT_DOUBLE_EQ(s.downtime_s, 0.1392);  // never longer than the migration
  EXPECT_DOUBLE_EQ(s.dst_fraction, 0.2);
}
