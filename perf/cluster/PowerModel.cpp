#include "perf/cluster/PowerModel.hpp"

#include <stdexcept>

namespace mm::cluster {

SpecPowerModel::SpecPowerModel(std::string name, std::array<double, 11> watts)
    : name_(std::move(name)), watts_(watts) {}

void SpecPowerModel::refuse(double utilization) const {
  throw std::invalid_argument("power model " + name_ + ": utilization " +
                              std::to_string(utilization) + " outside [0, 1]");
}

SpecPowerModel SpecPowerModel::hp_ml110_g4() {
  return SpecPowerModel("HP ProLiant ML110 G4 (Xeon 3040)",
                        {86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117});
}

SpecPowerModel SpecPowerModel::hp_ml110_g5() {
  return SpecPowerModel("HP ProLiant ML110 G5 (Xeon 3075)",
                        {93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135});
}

}  // namespace mm::cluster
