// Host overload detection of Beloglazov & Buyya (CCPE 2012) as CloudSim's
// PowerVmAllocationPolicyMigration* implement it: a static threshold (THR),
// adaptive thresholds from the host's utilization history (IQR, MAD), and a
// local-regression forecast of the utilization one migration ahead (LR, LRR).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "perf/cluster/ClusterModel.hpp"

namespace mm::cluster {

class OverloadDetector {
 public:
  virtual ~OverloadDetector() = default;
  virtual bool is_overloaded(const ClusterModel& model, int host) const = 0;
  virtual std::string name() const = 0;
};

// Requested utilization above the threshold.
class StaticThresholdDetector final : public OverloadDetector {
 public:
  explicit StaticThresholdDetector(double threshold) : threshold_(threshold) {}
  bool is_overloaded(const ClusterModel& model, int host) const override;
  std::string name() const override { return "thr"; }

 private:
  double threshold_;
};

// Threshold 1 - s * spread(history); the history needs 12 samples up to its
// last non-zero one, otherwise the fallback (CloudSim: THR 0.7) decides.
class AdaptiveThresholdDetector final : public OverloadDetector {
 public:
  enum class Spread { iqr, mad };
  AdaptiveThresholdDetector(Spread spread, double safety, double fallback_threshold = 0.7)
      : spread_(spread), safety_(safety), fallback_(fallback_threshold) {}
  bool is_overloaded(const ClusterModel& model, int host) const override;
  std::string name() const override { return spread_ == Spread::iqr ? "iqr" : "mad"; }
  // The threshold; nullopt when the history is too short.
  std::optional<double> threshold(const ClusterModel& model, int host) const;

 private:
  Spread spread_;
  double safety_;
  StaticThresholdDetector fallback_;
};

// s * forecast(last 10 samples, at 10 + ceil(max migration time / interval))
// >= 1. The migration time comes from the migration cost model in use.
class LocalRegressionDetector final : public OverloadDetector {
 public:
  using MaxMigrationSeconds = std::function<double(const ClusterModel&, int host)>;
  LocalRegressionDetector(bool robust, double safety, double interval_s,
                          MaxMigrationSeconds max_migration_s, bool weighted = false,
                          double fallback_threshold = 0.7)
      : robust_(robust), safety_(safety), interval_s_(interval_s),
        max_migration_s_(std::move(max_migration_s)), weighted_(weighted),
        fallback_(fallback_threshold) {}
  bool is_overloaded(const ClusterModel& model, int host) const override;
  std::string name() const override { return robust_ ? "lrr" : "lr"; }
  // Forecast times the safety parameter; nullopt when the history is too
  // short or the fit fails.
  std::optional<double> predicted(const ClusterModel& model, int host) const;

 private:
  bool robust_;
  double safety_;
  double interval_s_;
  MaxMigrationSeconds max_migration_s_;
  bool weighted_;
  StaticThresholdDetector fallback_;
};

}  // namespace mm::cluster
