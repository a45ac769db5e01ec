#include "perf/cluster/ClusterModel.hpp"

#include <gtest/gtest.h>

#include "perf/cluster/tests/TestCluster.hpp"

using namespace mm::cluster;
using namespace mm::cluster::testing;

TEST(ClusterModel, FitsChecksPeRamBandwidthAndMips) {
  TraceHolder t;
  auto m = cluster_with_hosts({0, 1});  // G4: 2 x 1860, G5: 2 x 2660
  m.add_vm(0, t.constant(100));         // 2500 MIPS, 870 MB
  m.vms[0].requested_mips = 2500;
  EXPECT_FALSE(m.fits(0, 0));  // one vCPU needs one PE of 2500
  EXPECT_TRUE(m.fits(1, 0));
  // RAM: 4096 MB holds two 1740 MB VMs but not a third.
  for (int i = 0; i < 3; ++i) {
    m.add_vm(1, t.constant(1));
    m.vms.back().requested_mips = 20;
  }
  m.attach(1, 1);
  m.attach(1, 2);
  EXPECT_FALSE(m.fits(1, 3));
  EXPECT_EQ(m.hosts[1].ram_used, 3480);
  m.detach(1, 2);
  EXPECT_TRUE(m.fits(1, 3));
  // MIPS: a 2000 MIPS demand leaves 3320 on the G5 host.
  m.vms[1].requested_mips = 2000;
  m.refresh_sums();
  EXPECT_DOUBLE_EQ(m.hosts[1].available_mips(), 5320 - 2000);
}

TEST(ClusterModel, CapsEachVmAtOnePeAndTheHostAtItsMips) {
  TraceHolder t;
  auto m = cluster_with_hosts({0});
  m.add_vm(0, t.constant(100));
  m.add_vm(0, t.constant(100));
  m.attach(0, 0);
  m.attach(0, 1);
  m.set_demands(0);
  EXPECT_DOUBLE_EQ(m.hosts[0].requested_mips, 5000);
  EXPECT_DOUBLE_EQ(m.hosts[0].capped_mips, 3720);
  EXPECT_DOUBLE_EQ(m.hosts[0].allocated_mips(), 3720);
  EXPECT_NEAR(m.requested_utilization(0), 5000.0 / 3720, 1e-12);
}

TEST(ClusterModel, HostHistoryIsTheMipsWeightedSumOfItsVms) {
  TraceHolder t;
  auto m = cluster_with_hosts({1});  // 5320 MIPS
  m.add_vm(0, t.constant(0));        // 2500
  m.add_vm(3, t.constant(0));        // 500
  give_history(m.vms[0], {0.2, 0.4});
  give_history(m.vms[1], {1.0, 0.5, 1.0});
  m.attach(0, 0);
  m.attach(0, 1);
  std::array<double, kHistoryLength> h{};
  ASSERT_EQ(m.host_history(0, h), 3);
  EXPECT_NEAR(h[0], (0.4 * 2500 + 1.0 * 500) / 5320, 1e-6);
  EXPECT_NEAR(h[1], (0.2 * 2500 + 0.5 * 500) / 5320, 1e-6);
  EXPECT_NEAR(h[2], (1.0 * 500) / 5320, 1e-6);
  // The ring keeps the newest 30.
  for (int i = 0; i < 40; ++i) m.vms[0].push_history(i / 100.0);
  EXPECT_EQ(m.vms[0].history_len, kHistoryLength);
  EXPECT_NEAR(m.vms[0].history_at(0), 0.39, 1e-6);
  EXPECT_NEAR(m.vms[0].history_at(29), 0.10, 1e-6);
}
