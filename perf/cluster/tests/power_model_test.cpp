#include "perf/cluster/PowerModel.hpp"

#include <gtest/gtest.h>

using mm::cluster::SpecPowerModel;

TEST(SpecPowerModel, TablePointsAreCloudSimsValues) {
  const auto g4 = SpecPowerModel::hp_ml110_g4();
  const auto g5 = SpecPowerModel::hp_ml110_g5();
  EXPECT_DOUBLE_EQ(g4.power_watts(0), 86);
  EXPECT_DOUBLE_EQ(g4.power_watts(0.5), 102);
  EXPECT_DOUBLE_EQ(g4.power_watts(1), 117);
  EXPECT_DOUBLE_EQ(g5.power_watts(0), 93.7);
  EXPECT_DOUBLE_EQ(g5.power_watts(0.3), 105);
  EXPECT_DOUBLE_EQ(g5.power_watts(1), 135);
}

TEST(SpecPowerModel, InterpolatesLinearlyBetweenPoints) {
  const auto g4 = SpecPowerModel::hp_ml110_g4();
  const auto g5 = SpecPowerModel::hp_ml110_g5();
  EXPECT_NEAR(g4.power_watts(0.05), (86 + 89.4) / 2, 1e-9);
  EXPECT_NEAR(g4.power_watts(0.95), 115.5, 1e-9);
  EXPECT_NEAR(g5.power_watts(0.42), 110 + 0.2 * 6, 1e-9);
  EXPECT_NEAR(g5.power_watts(0.99), 133 + 0.9 * 2, 1e-9);
}

TEST(SpecPowerModel, RefusesUtilizationOutsideTheTable) {
  const auto g4 = SpecPowerModel::hp_ml110_g4();
  EXPECT_THROW(g4.power_watts(-0.01), std::invalid_argument);
  EXPECT_THROW(g4.power_watts(1.2), std::invalid_argument);
  EXPECT_DOUBLE_EQ(g4.power_watts(1.005), 117);  // rounding of summed MIPS
}
