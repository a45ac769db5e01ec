// Host power as a function of CPU utilization: the SPECpower_ssj2008 tables
// CloudSim's power package uses (11 points, 0 % to 100 % in steps of 10 %),
// linearly interpolated between points.
#pragma once

#include <array>
#include <string>

namespace mm::cluster {

class SpecPowerModel {
 public:
  // watts[i] is the power at utilization i / 10.
  SpecPowerModel(std::string name, std::array<double, 11> watts);

  // utilization in [0, 1]; throws std::invalid_argument outside. Inline:
  // the placement evaluates it for every candidate host.
  double power_watts(double utilization) const {
    // CloudSim clamps utilizations in (1, 1.01) to 1: rounding of summed MIPS.
    if (utilization > 1.0 && utilization < 1.01) utilization = 1.0;
    if (!(utilization >= 0.0 && utilization <= 1.0)) refuse(utilization);
    const double scaled = utilization * 10.0;
    const int lo = static_cast<int>(scaled);
    if (lo >= 10) return watts_[10];
    return watts_[size_t(lo)] + (watts_[size_t(lo) + 1] - watts_[size_t(lo)]) * (scaled - lo);
  }
  double max_watts() const { return watts_[10]; }
  const std::string& name() const { return name_; }

  // HP ProLiant ML110 G4 (Intel Xeon 3040) and G5 (Xeon 3075): CloudSim's
  // PowerModelSpecPowerHpProLiantMl110G4Xeon3040 / G5Xeon3075 values.
  static SpecPowerModel hp_ml110_g4();
  static SpecPowerModel hp_ml110_g5();

 private:
  [[noreturn]] void refuse(double utilization) const;
  std::string name_;
  std::array<double, 11> watts_;
};

}  // namespace mm::cluster
