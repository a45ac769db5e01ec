// The libvirt path of `memmotionctl migrate --libvirt`: what an operator's
// options become in libvirt's migration flags and parameters (LibvirtPlan,
// pure, refuses what the daemons cannot carry), and one migration job driven
// through libvirt's C API (LibvirtMigration: start, job stats, abort).
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>

namespace mm::control {

// What the operator asked for.
struct LibvirtRequest {
  std::string socket_path;      // where the source daemon listens; the destination QEMU listens on the same path
  int parallel_connections = 4; // QEMU multifd channels through libvirt (--parallel); 0: one stream
  uint64_t downtime_ms = 0;     // 0: libvirt's default
  double postcopy_after_s = 0;  // > 0: allow postcopy and switch after this long
  bool persist_dest = false;    // define the domain on the destination (virsh --persistent)
  bool undefine_source = false; // undefine it here after success (virsh --undefinesource)
  bool suspend = false;         // leave the domain paused on the destination (virsh --suspend)
  bool tunnelled = false;       // asked for, to be refused
  bool copy_storage = false;    // asked for, to be refused
};

// What libvirt is told. Throws std::invalid_argument, naming the cause, for
// a combination the daemons cannot serve.
struct LibvirtPlan {
  unsigned int flags = 0;
  std::string migrate_uri;  // VIR_MIGRATE_PARAM_URI: unix://<socket_path>
  int parallel_connections = 0;
  uint64_t downtime_ms = 0;
  double postcopy_after_s = 0;

  static LibvirtPlan from(const LibvirtRequest& r);
};

// libvirt's job statistics in the shape of the daemon's QEMU progress
// ("transferred", "remaining", "mbps", "dirty-rate", "total-time-ms",
// "downtime-ms"), so one progress display serves both paths.
nlohmann::json job_stats_json(virTypedParameterPtr params, int n);

class LibvirtError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One outgoing migration of one domain. The migration call blocks, so it
// runs on a thread of its own; the caller polls stats() and may abort().
class LibvirtMigration {
 public:
  LibvirtMigration(const std::string& connect_uri, const std::string& domain);
  ~LibvirtMigration();
  LibvirtMigration(const LibvirtMigration&) = delete;
  LibvirtMigration& operator=(const LibvirtMigration&) = delete;

  void start(const std::string& dest_uri, const LibvirtPlan& plan);
  bool running() const { return !finished_.load(); }
  // After the thread ended: empty when libvirt reports success.
  std::string wait();
  nlohmann::json stats(bool completed = false);
  void abort();
  void start_postcopy();
  void set_max_downtime(uint64_t ms);
  std::string state();
  // When the job outlives a session that failed: the destination's
  // incoming copy of the domain, if it is still paused in the incoming
  // migration while the domain runs here, is destroyed (QEMU 7.2's
  // destination can wait for ever at a multifd sync point when the
  // destination daemon dies, and libvirt waits with it:
  // dataplane/qemu/QEMU-7.2-STREAM.md). Nothing is touched otherwise.
  // Returns what was found and done, as a sentence.
  std::string end_stuck_incoming(const std::string& dest_uri);

 private:
  std::string last_error() const;

  virConnectPtr conn_ = nullptr;
  virDomainPtr dom_ = nullptr;
  std::thread thread_;
  std::atomic<bool> finished_{true};
  std::string error_;
};

}  // namespace mm::control
