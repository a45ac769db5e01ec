#include "perf/cluster/Scenario.hpp"

#include <gtest/gtest.h>

using namespace mm::cluster;

TEST(Scenario, PlanetLabClusterFollowsCloudSimsTypeRules) {
  std::vector<VmTrace> traces(10);
  for (auto& t : traces) t.percent.assign(289, 10);
  auto m = planetlab_cluster(traces, 5);
  ASSERT_EQ(m.vms.size(), 10u);
  // ceil(10 / 4) = 3: types 0 0 0 1 1 1 2 2 2 3.
  const int expected[] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 3};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(m.vms[size_t(i)].type, expected[i]);
  EXPECT_DOUBLE_EQ(m.vms[3].mips, 2000);
  EXPECT_EQ(m.vms[9].ram_mb, 613);
  EXPECT_EQ(m.hosts[0].type, 0);
  EXPECT_EQ(m.hosts[1].type, 1);
  EXPECT_DOUBLE_EQ(m.hosts[1].total_mips, 5320);
  auto s = sampled_cluster(traces, 100, 80, 42);
  EXPECT_EQ(s.vms.size(), 100u);
  EXPECT_EQ(s.hosts.size(), 80u);
}

TEST(Scenario, PoliciesByName) {
  auto cost = std::make_shared<CloudSimMigrationCost>();
  for (std::string d : {"thr", "iqr", "mad", "lr", "lrr"})
    EXPECT_EQ(make_detector(d, default_parameter(d), cost)->name(), d);
  for (std::string s : {"mmt", "mc", "mu", "rs"}) EXPECT_EQ(make_selector(s)->name(), s);
  EXPECT_THROW(make_detector("median", 1, cost), std::invalid_argument);
  EXPECT_THROW(make_selector("fifo"), std::invalid_argument);
  EXPECT_DOUBLE_EQ(default_parameter("mad"), 2.5);
}
