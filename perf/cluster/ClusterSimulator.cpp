#include "perf/cluster/ClusterSimulator.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace mm::cluster {

ClusterSimulator::ClusterSimulator(SimulationConfig config,
                                   std::unique_ptr<OverloadDetector> detector,
                                   std::unique_ptr<VmSelector> selector,
                                   std::shared_ptr<const MigrationCostModel> cost)
    : config_(config), detector_(std::move(detector)), selector_(std::move(selector)),
      cost_(std::move(cost)) {}

int ClusterSimulator::find_host(ClusterModel& model, int vm, const std::vector<char>& excluded,
                                bool consider_empty) const {
  const double req = model.vms[size_t(vm)].requested_mips;
  int best = -1;
  double best_diff = std::numeric_limits<double>::max();
  // CloudSim scans hosts in index order and keeps the first strictly
  // smaller power increase: the minimum of (increase, index), which does not
  // depend on the order the candidates are looked at. Increases within one
  // linear segment of the SPECpower table are equal but for rounding, which
  // then decides in CloudSim and here alike, not always the same way.
  auto consider = [&](int h) {
    if (excluded[size_t(h)]) return;
    Host& host = model.hosts[size_t(h)];
    if (!model.fits(h, vm)) return;
    const auto& power = model.host_types[size_t(host.type)].power;
    const double after = (host.allocated_mips() + req) / host.total_mips;
    const double diff = power.power_watts(std::min(after, 1.0)) - host_decision_watts_[size_t(h)];
    if (!(diff < best_diff || (diff == best_diff && h < best))) return;
    // CloudSim asks the detector first; asking it only for a host that would
    // win picks the same host with far fewer detector runs.
    if (host.allocated_mips() != 0) {
      const int was_on = model.vms[size_t(vm)].host;
      model.attach(h, vm);
      const bool overloaded = detector_->is_overloaded(model, h);
      model.detach(h, vm);
      model.vms[size_t(vm)].host = was_on;
      if (overloaded) return;
    }
    best = h;
    best_diff = diff;
  };
  // Copy: a trial attach / detach reorders the list.
  scan_.assign(model.nonempty_hosts.begin(), model.nonempty_hosts.end());
  for (int h : scan_) consider(h);
  // Empty hosts of one type that were off at the decision all cost the same:
  // only the first that is not excluded can win.
  if (!consider_empty) return best;
  for (const auto& empties : model.empty_hosts_by_type)
    for (int h : empties) {
      if (excluded[size_t(h)]) continue;
      if (model.hosts[size_t(h)].decision_utilization == 0) {
        consider(h);
        break;
      }
      consider(h);
    }
  return best;
}

void ClusterSimulator::set_decision_state(ClusterModel& model) {
  host_decision_watts_.resize(model.hosts.size());
  for (size_t h = 0; h < model.hosts.size(); ++h) {
    Host& host = model.hosts[h];
    host.decision_utilization = host.allocated_mips() / host.total_mips;
    host_decision_watts_[h] = model.host_types[size_t(host.type)].power.power_watts(
        std::min(host.decision_utilization, 1.0));
  }
}

void ClusterSimulator::place_initially(ClusterModel& model, SimulationMetrics& m) {
  // A VM being created asks for its full MIPS (CloudSim's Vm.getCurrentRequestedMips
  // while isBeingInstantiated), so the first placement is by VM size.
  for (auto& v : model.vms) v.requested_mips = v.mips;
  set_decision_state(model);  // all hosts off
  std::vector<char> none(model.hosts.size(), 0);
  for (int vm = 0; vm < static_cast<int>(model.vms.size()); ++vm) {
    const int h = find_host(model, vm, none);
    if (h < 0) {
      ++m.vms_not_placed;
      continue;
    }
    model.attach(h, vm);
  }
}

std::vector<ClusterSimulator::Migration> ClusterSimulator::plan(ClusterModel& model) {
  const size_t n_hosts = model.hosts.size();
  set_decision_state(model);
  for (auto& v : model.vms) v.moving = false;

  std::vector<char> overloaded(n_hosts, 0);
  std::vector<int> over_list;
  for (size_t h = 0; h < n_hosts; ++h)
    if (!model.hosts[h].vms.empty() && detector_->is_overloaded(model, int(h))) {
      overloaded[h] = 1;
      over_list.push_back(int(h));
    }

  std::vector<Migration> migrations;
  // Off overloaded hosts: one VM at a time until the detector is satisfied.
  std::vector<std::pair<int, int>> leaving;  // vm, src
  for (int h : over_list) {
    for (;;) {
      const int vm = selector_->select(model, h);
      if (vm < 0) break;
      model.vms[size_t(vm)].moving = true;
      model.detach(h, vm);
      leaving.emplace_back(vm, h);
      if (!detector_->is_overloaded(model, h)) break;
    }
  }
  std::stable_sort(leaving.begin(), leaving.end(), [&](auto a, auto b) {
    return model.vms[size_t(a.first)].requested_mips > model.vms[size_t(b.first)].requested_mips;
  });
  for (auto [vm, src] : leaving) {
    const int dst = find_host(model, vm, overloaded);
    if (dst < 0) {
      model.attach(src, vm);  // stays where it is
      model.vms[size_t(vm)].moving = false;
      continue;
    }
    model.attach(dst, vm);
    migrations.push_back({vm, src, dst, {}});
  }

  // Underloaded hosts, least utilized first (by their utilization at the
  // decision, which CloudSim does not update while it plans).
  std::vector<char> excluded_place(n_hosts, 0), excluded_under(n_hosts, 0);
  std::vector<int> candidates;
  for (size_t h = 0; h < n_hosts; ++h) {
    const double u = model.hosts[h].decision_utilization;
    if (overloaded[h] || u == 0) excluded_place[h] = excluded_under[h] = 1;
    if (!overloaded[h] && u > 0 && u < 1) candidates.push_back(int(h));
  }
  std::stable_sort(candidates.begin(), candidates.end(), [&](int a, int b) {
    return model.hosts[size_t(a)].decision_utilization < model.hosts[size_t(b)].decision_utilization;
  });
  std::vector<int> vms_here;
  std::vector<std::pair<int, int>> placed;  // vm, dst
  for (int h : candidates) {
    if (excluded_under[size_t(h)]) continue;
    excluded_under[size_t(h)] = excluded_place[size_t(h)] = 1;
    vms_here.clear();
    for (int vm : model.hosts[size_t(h)].vms)
      if (!model.vms[size_t(vm)].moving) vms_here.push_back(vm);
    if (vms_here.empty()) continue;
    std::stable_sort(vms_here.begin(), vms_here.end(), [&](int a, int b) {
      return model.vms[size_t(a)].requested_mips > model.vms[size_t(b)].requested_mips;
    });
    placed.clear();
    bool all = true;
    for (int vm : vms_here) {
      // Every empty host is excluded here: off at the decision, or emptied by it.
      const int dst = find_host(model, vm, excluded_place, false);
      if (dst < 0) {
        all = false;
        break;
      }
      model.attach(dst, vm);  // planned: the VM is on both hosts for now
      model.vms[size_t(vm)].host = h;
      placed.emplace_back(vm, dst);
    }
    if (!all) {
      for (auto [vm, dst] : placed) {
        model.detach(dst, vm);
        model.vms[size_t(vm)].host = h;
      }
      continue;
    }
    for (auto [vm, dst] : placed) {
      model.detach(h, vm);
      model.vms[size_t(vm)].host = dst;
      model.vms[size_t(vm)].moving = true;
      excluded_under[size_t(dst)] = 1;
      migrations.push_back({vm, h, dst, {}});
    }
  }
  for (auto& mig : migrations) {
    mig.cost = cost_->cost(model.vms[size_t(mig.vm)], model.hosts[size_t(mig.src)],
                           model.hosts[size_t(mig.dst)]);
  }
  return migrations;
}

namespace {

double demand_at(const Vm& v, int sample, double alpha) {
  const double u0 = v.trace->utilization(sample);
  const double u1 = v.trace->utilization(sample + 1);
  return v.mips * (u0 + (u1 - u0) * alpha);
}

struct Member {
  int vm;
  bool incoming;
  double at;  // incoming: arrival; staying or leaving: departure (T if staying)
  const MigrationCost* cost;
};

}  // namespace

void ClusterSimulator::account_interval(const ClusterModel& model, int sample,
                                        const std::vector<Migration>& migrations) {
  const double T = config_.interval_s;
  const bool cloudsim_sla = config_.sla == SlaAccounting::cloudsim;
  // Migrations touching each host; most hosts have none.
  std::vector<std::vector<const Migration*>> touching;
  std::vector<int> touched_hosts;
  if (!migrations.empty()) {
    touching.resize(model.hosts.size());
    for (const auto& mig : migrations) {
      for (int h : {mig.src, mig.dst}) {
        if (touching[size_t(h)].empty()) touched_hosts.push_back(h);
        touching[size_t(h)].push_back(&mig);
      }
    }
  }
  std::vector<Member> members;
  std::vector<double> bounds;
  for (size_t hi = 0; hi < model.hosts.size(); ++hi) {
    const Host& host = model.hosts[hi];
    const auto& power = model.host_types[size_t(host.type)].power;
    const bool has_migrations = !touching.empty() && !touching[hi].empty();
    if (!has_migrations && host.vms.empty()) continue;
    members.clear();
    for (int vm : host.vms) members.push_back({vm, false, T, nullptr});
    bounds.assign({0.0, T});
    if (has_migrations) {
      // host.vms is the planned placement: arrivals are in it, departures not.
      for (const Migration* mig : touching[hi]) {
        const double end = std::min(mig->cost.total_s, T);
        if (mig->dst == int(hi)) {
          for (auto& mem : members)
            if (mem.vm == mig->vm) mem = {mig->vm, true, end, &mig->cost};
        } else {
          members.push_back({mig->vm, false, end, &mig->cost});
        }
        bounds.push_back(end);
      }
      std::sort(bounds.begin(), bounds.end());
      bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
    }
    // State of the host over [a, b): a VM counts where it is at a.
    auto state = [&](double a, double tau, double& alloc, double& requested, double& scale) {
      double capped = 0, overhead = 0, overhead_req = 0, req_sum = 0;
      const double alpha = tau / T;
      for (const auto& mem : members) {
        const Vm& v = model.vms[size_t(mem.vm)];
        const double r = demand_at(v, sample, alpha);
        const bool present = mem.incoming ? mem.at <= a : mem.at > a;
        if (present) {
          capped += std::min(r, host.pe_mips);
          req_sum += r;
          if (!mem.incoming && mem.cost && mem.at > a) {
            overhead += mem.cost->src_mips;
            overhead_req += mem.cost->src_mips;
          }
        } else if (mem.incoming) {
          const double o = mem.cost->dst_fraction * r + mem.cost->dst_mips;
          overhead += o;
          overhead_req += cloudsim_sla ? r : o;
        }
      }
      const double load = capped + overhead;
      alloc = std::min(load, host.total_mips);
      requested = req_sum + overhead_req;
      scale = load > host.total_mips ? host.total_mips / load : 1.0;
    };
    for (size_t s = 0; s + 1 < bounds.size(); ++s) {
      const double a = bounds[s], b = bounds[s + 1];
      double alloc_a, req_a, scale_a, alloc_b, req_b, scale_b;
      state(a, a, alloc_a, req_a, scale_a);
      if (alloc_a <= 0) continue;  // off: CloudSim charges nothing from zero utilization
      state(a, b, alloc_b, req_b, scale_b);
      const double pa = power.power_watts(std::min(alloc_a / host.total_mips, 1.0));
      const double pb = power.power_watts(std::min(alloc_b / host.total_mips, 1.0));
      energy_ws_ += 0.5 * (pa + pb) * (b - a);
      active_s_ += b - a;
      host_active_s_[hi] += b - a;
      if (alloc_a < req_a * (1 - 1e-12)) {
        violation_s_ += b - a;
        host_violation_s_[hi] += b - a;
      }
    }
    // The VMs' side, from the state at the start of the interval: requested
    // MIPS and what leaving VMs lose while they move.
    double alloc0, req0, scale0;
    state(0, 0, alloc0, req0, scale0);
    for (const auto& mem : members) {
      if (mem.incoming) continue;  // counted on its source
      const Vm& v = model.vms[size_t(mem.vm)];
      const double r = demand_at(v, sample, 0);
      requested_mips_s_ += r * T;
      vm_requested_[size_t(mem.vm)] += r * T;
      if (mem.cost) {
        const double share = std::min(r, host.pe_mips) * scale0;
        const double moving = mem.at;
        const double down = std::min(mem.cost->downtime_s, moving);
        const double loss = (r - (1 - mem.cost->vm_degradation) * share) * (moving - down) + r * down;
        migration_loss_mips_s_ += loss;
        vm_migration_loss_[size_t(mem.vm)] += loss;
      }
    }
  }
}

namespace {

double percentile_of_histogram(const std::vector<long>& hist, long count, double p) {
  long acc = 0;
  for (size_t b = 0; b < hist.size(); ++b) {
    acc += hist[b];
    if (double(acc) >= p * double(count)) return double(b) / 1000.0;
  }
  return 0;
}

}  // namespace

SimulationMetrics combine_cells(const std::vector<SimulationMetrics>& cells,
                                const std::vector<int>& hosts_per_cell,
                                const std::vector<int>& vms_per_cell) {
  SimulationMetrics t;
  t.utilization_histogram.assign(1001, 0);
  double host_weight = 0, vm_weight = 0;
  for (size_t c = 0; c < cells.size(); ++c) {
    const auto& m = cells[c];
    t.energy_kwh += m.energy_kwh;
    t.migrations += m.migrations;
    t.migrations_clamped += m.migrations_clamped;
    t.vms_not_placed += m.vms_not_placed;
    t.vms_dropped_idle += m.vms_dropped_idle;
    t.mean_active_hosts += m.mean_active_hosts;
    t.max_active_hosts += m.max_active_hosts;  // an upper bound: peaks need not coincide
    t.wall_s += m.wall_s;
    t.active_host_s += m.active_host_s;
    t.violation_s += m.violation_s;
    t.requested_mips_s += m.requested_mips_s;
    t.migration_loss_mips_s += m.migration_loss_mips_s;
    t.migration_s_total += m.migration_s_total;
    t.utilization_sum += m.utilization_sum;
    t.utilization_count += m.utilization_count;
    for (size_t b = 0; b < m.utilization_histogram.size() && b < 1001; ++b)
      t.utilization_histogram[b] += m.utilization_histogram[b];
    t.slatah_per_host += m.slatah_per_host * hosts_per_cell[c];
    t.pdm_per_vm += m.pdm_per_vm * vms_per_cell[c];
    host_weight += hosts_per_cell[c];
    vm_weight += vms_per_cell[c];
    if (t.active_hosts.size() < m.active_hosts.size()) t.active_hosts.resize(m.active_hosts.size());
    for (size_t k = 0; k < m.active_hosts.size(); ++k) t.active_hosts[k] += m.active_hosts[k];
  }
  t.slatah = t.active_host_s > 0 ? t.violation_s / t.active_host_s : 0;
  t.pdm = t.requested_mips_s > 0 ? t.migration_loss_mips_s / t.requested_mips_s : 0;
  t.slatah_per_host = host_weight > 0 ? t.slatah_per_host / host_weight : 0;
  t.pdm_per_vm = vm_weight > 0 ? t.pdm_per_vm / vm_weight : 0;
  t.slav = t.slatah * t.pdm;
  t.esv = t.energy_kwh * t.slav;
  t.mean_utilization = t.utilization_count ? t.utilization_sum / double(t.utilization_count) : 0;
  t.p95_utilization = percentile_of_histogram(t.utilization_histogram, t.utilization_count, 0.95);
  t.mean_migration_s = t.migrations ? t.migration_s_total / double(t.migrations) : 0;
  return t;
}

SimulationMetrics ClusterSimulator::run(ClusterModel& model) {
  const auto started = std::chrono::steady_clock::now();
  SimulationMetrics m;
  energy_ws_ = active_s_ = violation_s_ = requested_mips_s_ = migration_loss_mips_s_ = 0;
  host_active_s_.assign(model.hosts.size(), 0);
  host_violation_s_.assign(model.hosts.size(), 0);
  vm_requested_.assign(model.vms.size(), 0);
  vm_migration_loss_.assign(model.vms.size(), 0);

  place_initially(model, m);
  model.finish_creation();
  // Utilization of active hosts: a histogram of 0.1 % bins for the p95.
  std::vector<long> util_hist(1001, 0);
  double util_sum = 0;
  long util_count = 0, active_sum = 0;
  double migration_s_sum = 0;

  std::vector<Migration> migrations;
  for (int k = 0; k < config_.samples; ++k) {
    model.set_demands(k, k > 0 ? config_.decision_offset_s / config_.interval_s : 0.0);
    migrations.clear();
    if (k > 0 && config_.drop_idle_vms) {
      for (int vm = 0; vm < static_cast<int>(model.vms.size()); ++vm) {
        Vm& v = model.vms[size_t(vm)];
        if (v.host < 0 || v.requested_mips != 0) continue;
        model.detach(v.host, vm);
        v.host = -1;
        ++m.vms_dropped_idle;
      }
    }
    if (k > 0) {
      for (auto& v : model.vms)
        if (v.host >= 0) v.push_history(v.utilization());
      model.refresh_history_sums();
      migrations = plan(model);
      for (auto& mig : migrations) {
        if (mig.cost.total_s > config_.interval_s) {
          ++m.migrations_clamped;
          mig.cost.total_s = config_.interval_s;
        }
        migration_s_sum += mig.cost.total_s;
      }
      m.migrations += static_cast<long>(migrations.size());
      if (std::getenv("MM_CLUSTER_TRACE"))
        for (const auto& mig : migrations)
          std::fprintf(stderr, "%d %d %d %d\n", k, mig.vm, mig.src, mig.dst);
    }
    if ((k > 0 && k + 1 < config_.samples) || config_.account_edge_intervals) {
      const double before = energy_ws_;
      account_interval(model, k, migrations);
      if (std::getenv("MM_CLUSTER_TRACE")) std::fprintf(stderr, "E %d %.2f\n", k, energy_ws_ - before);
    }
    int active = 0;
    for (const auto& h : model.hosts) {
      const double u = std::min(h.allocated_mips() / h.total_mips, 1.0);
      if (u <= 0) continue;
      ++active;
      util_sum += u;
      ++util_count;
      ++util_hist[static_cast<size_t>(std::lround(u * 1000))];
    }
    active_sum += active;
    m.max_active_hosts = std::max(m.max_active_hosts, active);
    if (config_.keep_active_hosts_series) m.active_hosts.push_back(active);
  }

  m.active_host_s = active_s_;
  m.violation_s = violation_s_;
  m.requested_mips_s = requested_mips_s_;
  m.migration_loss_mips_s = migration_loss_mips_s_;
  m.migration_s_total = migration_s_sum;
  m.utilization_sum = util_sum;
  m.utilization_count = util_count;
  m.energy_kwh = energy_ws_ / 3600.0 / 1000.0;
  m.slatah = active_s_ > 0 ? violation_s_ / active_s_ : 0;
  m.pdm = requested_mips_s_ > 0 ? migration_loss_mips_s_ / requested_mips_s_ : 0;
  double sum = 0;
  int n = 0;
  for (size_t h = 0; h < host_active_s_.size(); ++h)
    if (host_active_s_[h] > 0) {
      sum += host_violation_s_[h] / host_active_s_[h];
      ++n;
    }
  m.slatah_per_host = n ? sum / n : 0;
  sum = 0;
  n = 0;
  for (size_t v = 0; v < vm_requested_.size(); ++v)
    if (vm_requested_[v] > 0) {
      sum += vm_migration_loss_[v] / vm_requested_[v];
      ++n;
    }
  m.pdm_per_vm = n ? sum / n : 0;
  m.slav = m.slatah * m.pdm;
  m.esv = m.energy_kwh * m.slav;
  m.mean_utilization = util_count ? util_sum / double(util_count) : 0;
  m.p95_utilization = percentile_of_histogram(util_hist, util_count, 0.95);
  m.utilization_histogram = std::move(util_hist);
  m.mean_active_hosts = double(active_sum) / config_.samples;
  m.mean_migration_s = m.migrations ? migration_s_sum / double(m.migrations) : 0;
  m.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return m;
}

}  // namespace mm::cluster
