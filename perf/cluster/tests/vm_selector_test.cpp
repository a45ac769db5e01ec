#include "perf/cluster/VmSelector.hpp"

#include <gtest/gtest.h>

#include "perf/cluster/tests/TestCluster.hpp"

using namespace mm::cluster;
using namespace mm::cluster::testing;

namespace {

// G5 host with VMs of types 1 (1740 MB), 0 (870 MB), 3 (613 MB), 2 (1740 MB).
ClusterModel four_vms(TraceHolder& t) {
  auto m = cluster_with_hosts({1});
  for (int type : {1, 0, 3, 2}) {
    m.add_vm(type, t.constant(0));
    m.attach(0, int(m.vms.size()) - 1);
  }
  return m;
}

}  // namespace

TEST(VmSelector, MinimumMigrationTimeTakesTheLeastRam) {
  TraceHolder t;
  auto m = four_vms(t);
  MinimumMigrationTimeSelector mmt;
  EXPECT_EQ(mmt.select(m, 0), 2);  // 613 MB
  m.vms[2].moving = true;
  EXPECT_EQ(mmt.select(m, 0), 1);  // 870 MB
}

TEST(VmSelector, MinimumUtilizationTakesTheLeastBusy) {
  TraceHolder t;
  auto m = four_vms(t);
  const double u[] = {0.5, 0.3, 0.9, 0.1};
  for (int i = 0; i < 4; ++i) m.vms[size_t(i)].requested_mips = u[i] * m.vms[size_t(i)].mips;
  MinimumUtilizationSelector mu;
  EXPECT_EQ(mu.select(m, 0), 3);
}

TEST(VmSelector, MaximumCorrelationTakesTheVmTheOthersExplain) {
  TraceHolder t;
  auto m = cluster_with_hosts({1});
  for (int i = 0; i < 3; ++i) {
    m.add_vm(3, t.constant(0));
    m.attach(0, i);
  }
  // VMs 1 and 2 track each other; VM 0 is noise.
  const double a[] = {0.1, 0.5, 0.2, 0.8, 0.3, 0.6, 0.4, 0.9, 0.2, 0.7};
  const double noise[] = {0.5, 0.1, 0.9, 0.3, 0.3, 0.8, 0.2, 0.5, 0.6, 0.1};
  for (int i = 0; i < 10; ++i) {
    m.vms[0].push_history(noise[i]);
    m.vms[1].push_history(a[i]);
    m.vms[2].push_history(0.5 * a[i] + 0.1 + (i % 3) * 0.01);
  }
  MaximumCorrelationSelector mc;
  const int chosen = mc.select(m, 0);
  EXPECT_TRUE(chosen == 1 || chosen == 2);  // the correlated pair, not the noise
  // Too little history for the regression: MMT decides (all 613 MB: first).
  auto short_m = cluster_with_hosts({1});
  for (int i = 0; i < 3; ++i) {
    short_m.add_vm(i == 1 ? 3 : 0, t.constant(0));
    short_m.attach(0, i);
    short_m.vms[size_t(i)].push_history(0.5);
  }
  EXPECT_EQ(mc.select(short_m, 0), 1);  // the 613 MB VM
}

TEST(VmSelector, RandomPicksAMovableVmReproducibly) {
  TraceHolder t;
  auto m = four_vms(t);
  m.vms[0].moving = m.vms[1].moving = true;
  RandomSelector a(7), b(7);
  for (int i = 0; i < 20; ++i) {
    const int x = a.select(m, 0);
    EXPECT_TRUE(x == 2 || x == 3);
    EXPECT_EQ(x, b.select(m, 0));
  }
  for (auto& v : m.vms) v.moving = true;
  EXPECT_EQ(a.select(m, 0), -1);
}
