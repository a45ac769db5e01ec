#include "LibvirtMigration.hpp"

#include <libvirt/virterror.h>

#include <cstring>

namespace mm::control {

using nlohmann::json;

LibvirtPlan LibvirtPlan::from(const LibvirtRequest& r) {
  if (r.tunnelled) {
    throw std::invalid_argument(
        "--tunnelled cannot go through memmotiond: libvirt then carries the migration stream inside its own "
        "connection to the destination libvirtd, so QEMU never connects to the daemon's socket (and libvirt "
        "does not combine it with --parallel)");
  }
  if (r.copy_storage) {
    throw std::invalid_argument(
        "--copy-storage cannot go through memmotiond: libvirt copies disks over NBD connections of its own, "
        "beside the migration stream; use shared storage");
  }
  if (r.socket_path.empty() || r.socket_path[0] != '/') {
    throw std::invalid_argument("the migration socket must be an absolute path, got '" + r.socket_path + "'");
  }
  if (r.parallel_connections < 0 || r.parallel_connections > 64) {
    throw std::invalid_argument("--parallel-connections must be 0..64, got " +
                                std::to_string(r.parallel_connections));
  }
  if (r.parallel_connections > 0 && r.postcopy_after_s > 0) {
    throw std::invalid_argument(
        "--postcopy-after needs --parallel-connections 0: QEMU 7.2 does not combine postcopy with multifd "
        "(libvirt's --parallel)");
  }
  LibvirtPlan p;
  // Peer-to-peer: the source libvirtd talks to the destination's itself,
  // so one call on the source host drives both sides.
  p.flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER;
  if (r.parallel_connections > 0) p.flags |= VIR_MIGRATE_PARALLEL;
  if (r.postcopy_after_s > 0) p.flags |= VIR_MIGRATE_POSTCOPY;
  if (r.persist_dest) p.flags |= VIR_MIGRATE_PERSIST_DEST;
  if (r.undefine_source) p.flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
  if (r.suspend) p.flags |= VIR_MIGRATE_PAUSED;
  p.migrate_uri = "unix://" + r.socket_path;
  p.parallel_connections = r.parallel_connections;
  p.downtime_ms = r.downtime_ms;
  p.postcopy_after_s = r.postcopy_after_s;
  return p;
}

json job_stats_json(virTypedParameterPtr params, int n) {
  auto ull = [&](const char* name) -> unsigned long long {
    unsigned long long v = 0;
    if (virTypedParamsGetULLong(params, n, name, &v) != 1) v = 0;
    return v;
  };
  json j;
  j["transferred"] = ull(VIR_DOMAIN_JOB_DATA_PROCESSED);
  j["remaining"] = ull(VIR_DOMAIN_JOB_DATA_REMAINING);
  j["total"] = ull(VIR_DOMAIN_JOB_DATA_TOTAL);
  // libvirt gives bytes/s; the daemon's progress carries QEMU's Mbit/s.
  j["mbps"] = double(ull(VIR_DOMAIN_JOB_MEMORY_BPS)) * 8 / 1e6;
  j["dirty-rate"] = ull(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE) * std::max(1ull, ull(VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE));
  j["total-time-ms"] = ull(VIR_DOMAIN_JOB_TIME_ELAPSED);
  j["downtime-ms"] = ull(VIR_DOMAIN_JOB_DOWNTIME);
  j["memory-iteration"] = ull(VIR_DOMAIN_JOB_MEMORY_ITERATION);
  return j;
}

namespace {
// libvirt prints every error to stderr unless told otherwise; memmotionctl
// reports them itself, once, with context.
void quiet(void*, virErrorPtr) {}
}  // namespace

std::string LibvirtMigration::last_error() const {
  const char* m = virGetLastErrorMessage();
  return m ? m : "unknown libvirt error";
}

LibvirtMigration::LibvirtMigration(const std::string& connect_uri, const std::string& domain) {
  if (virInitialize() < 0) throw LibvirtError("cannot initialize libvirt");
  virSetErrorFunc(nullptr, quiet);
  conn_ = virConnectOpen(connect_uri.empty() ? nullptr : connect_uri.c_str());
  if (!conn_) throw LibvirtError("cannot connect to libvirt at '" + connect_uri + "': " + last_error());
  dom_ = virDomainLookupByName(conn_, domain.c_str());
  if (!dom_) {
    const std::string e = last_error();
    virConnectClose(conn_);
    throw LibvirtError("no domain '" + domain + "': " + e);
  }
}

LibvirtMigration::~LibvirtMigration() {
  if (thread_.joinable()) thread_.join();
  if (dom_) virDomainFree(dom_);
  if (conn_) virConnectClose(conn_);
}

void LibvirtMigration::start(const std::string& dest_uri, const LibvirtPlan& plan) {
  if (virDomainIsActive(dom_) != 1) throw LibvirtError("the domain is not running: " + state());
  virTypedParameterPtr params = nullptr;
  int n = 0, max = 0;
  if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI, plan.migrate_uri.c_str()) < 0 ||
      (plan.parallel_connections > 0 &&
       virTypedParamsAddInt(&params, &n, &max, VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
                            plan.parallel_connections) < 0)) {
    virTypedParamsFree(params, n);
    throw LibvirtError("cannot build the migration parameters: " + last_error());
  }
  finished_ = false;
  thread_ = std::thread([this, dest_uri, params, n, flags = plan.flags] {
    if (virDomainMigrateToURI3(dom_, dest_uri.c_str(), params, unsigned(n), flags) < 0) error_ = last_error();
    virTypedParamsFree(params, n);
    finished_ = true;
  });
}

std::string LibvirtMigration::wait() {
  if (thread_.joinable()) thread_.join();
  return error_;
}

json LibvirtMigration::stats(bool completed) {
  int type = 0, n = 0;
  virTypedParameterPtr params = nullptr;
  if (virDomainGetJobStats(dom_, &type, &params, &n, completed ? VIR_DOMAIN_JOB_STATS_COMPLETED : 0) < 0) {
    return json::object();
  }
  json j = job_stats_json(params, n);
  j["job-type"] = type;
  virTypedParamsFree(params, n);
  return j;
}

void LibvirtMigration::abort() {
  if (virDomainAbortJob(dom_) < 0) throw LibvirtError("libvirt refused to abort the migration: " + last_error());
}

void LibvirtMigration::start_postcopy() {
  if (virDomainMigrateStartPostCopy(dom_, 0) < 0) throw LibvirtError("cannot switch to postcopy: " + last_error());
}

void LibvirtMigration::set_max_downtime(uint64_t ms) {
  if (virDomainMigrateSetMaxDowntime(dom_, ms, 0) < 0) {
    throw LibvirtError("cannot set the downtime limit: " + last_error());
  }
}

std::string LibvirtMigration::end_stuck_incoming(const std::string& dest_uri) {
  int st = 0, reason = 0;
  if (virDomainGetState(dom_, &st, &reason, 0) < 0 || st != VIR_DOMAIN_RUNNING) {
    return "the domain is " + state() + " here, so its destination copy was left alone";
  }
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom_, uuid) < 0) return "cannot read the domain's UUID: " + last_error();
  virConnectPtr dconn = virConnectOpen(dest_uri.c_str());
  if (!dconn) return "cannot connect to the destination's libvirt: " + last_error();
  std::string what;
  virDomainPtr d = virDomainLookupByUUIDString(dconn, uuid);
  if (!d) {
    what = "no copy of the domain on the destination";
  } else {
    if (virDomainGetState(d, &st, &reason, 0) < 0) {
      what = "cannot read the destination copy's state: " + last_error();
    } else if (st != VIR_DOMAIN_PAUSED || reason != VIR_DOMAIN_PAUSED_MIGRATION) {
      what = "the destination copy is not paused in an incoming migration (state " + std::to_string(st) +
             ", reason " + std::to_string(reason) + "), so it was left alone";
    } else if (virDomainDestroy(d) == 0) {
      what = "ended the destination's paused incoming copy (destroyed it)";
    } else {
      // The kill inside the destroy lets libvirt's stuck step go on, which
      // may remove the transient domain before the destroy gets to it.
      const std::string e = last_error();
      virDomainPtr again = virDomainLookupByUUIDString(dconn, uuid);
      if (!again || virDomainIsActive(again) == 0) {
        what = "ended the destination's paused incoming copy (libvirt removed it)";
      } else {
        what = "destroying the destination's paused incoming copy failed: " + e;
      }
      if (again) virDomainFree(again);
    }
    virDomainFree(d);
  }
  virConnectClose(dconn);
  return what;
}

std::string LibvirtMigration::state() {
  int st = 0, reason = 0;
  if (virDomainGetState(dom_, &st, &reason, 0) < 0) return "unknown";
  switch (st) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_PAUSED: return "paused";
    case VIR_DOMAIN_SHUTOFF: return "shut off";
    case VIR_DOMAIN_CRASHED: return "crashed";
    default: return "state " + std::to_string(st);
  }
}

}  // namespace mm::control
