// The daemon's control socket (docs/ARCHITECTURE.md §9): QMP conventions over a
// unix stream socket, one JSON object per line. Runs on the main lcore,
// never on the packet path; reaches the dataplane only through the engine.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/ControlRequest.hpp"
#include "control/PeerChannel.hpp"
#include "control/QmpClient.hpp"
#include "dataplane/engine/Engine.hpp"
#include "dataplane/store/PageStore.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace mm::control {

struct DaemonIdentity {
  std::string name;         // instance name (logs, EAL file prefix)
  uint16_t udp_base_port;   // our fabric UDP base port (default for peers)
  std::function<nlohmann::json()> port_stats;  // counters of the fabric port, summed
  std::function<nlohmann::json()> queue_stats;  // the same per queue (a list)
  std::string port_description;
  Capabilities caps;        // what the peer channel announces
  PeerCredentials peer_creds;  // pre-shared key or X.509 dir (none: peer sessions refused)
  std::string peer_listen;  // ip:port for the peer channel ("" = none)
  std::string metrics_listen;  // ip:port of the Prometheus endpoint ("" = none)
  std::string run_dir;      // where per-session sockets go
  std::string compressdev;  // compressdev for DEFLATE pages ("" = none)
  // --encrypt: sessions negotiated over the peer channel are AES-256-GCM
  // encrypted ("required", the default) or not ("off"); a peer that asks
  // for the other is refused, never silently followed.
  bool encrypt = true;
  // --cipher: the code that computes those sessions' AES-256-GCM (the same
  // records either way; wire/PacketCipher.hpp).
  wire::CipherEngine cipher = wire::CipherEngine::automatic;
  int control_gid = -1;     // group that may use the control socket (-1: the daemon's own)
  // --store-budget / --store: the page store (dataplane/store/README.md).
  store::StoreConfig store;
};

// Refusals and traffic of the control socket (query-stats "control", metrics
// memmotion_control_<name>_total).
struct ControlStats {
  uint64_t clients = 0;              // connections accepted
  uint64_t requests = 0;             // request lines executed
  uint64_t errors = 0;               // ... answered with an error (any class)
  uint64_t malformed_requests = 0;   // not JSON, or not a request's shape
  uint64_t oversized_requests = 0;   // a line over kMaxRequest: cut off
  uint64_t timed_out_requests = 0;   // a line not finished within kRequestDeadlineMs: cut off
  uint64_t unknown_session = 0;      // SessionNotFound answers
  nlohmann::json to_json() const;
};

class ControlServer {
 public:
  // Largest request line accepted; a longer one is refused and the client
  // disconnected (it could only be garbage or an attack on memory).
  static constexpr size_t kMaxRequest = 1 << 20;
  // A request line must be complete this long after its first byte; a
  // client that trickles one forever is cut off the same way.
  static constexpr uint64_t kRequestDeadlineMs = 5000;

  // engines: one per worker, indexed by worker; a session lives on
  // engines[Engine::owner(id, engines.size())].
  ControlServer(const std::string& path, std::vector<engine::Engine*> engines, DaemonIdentity id);
  ~ControlServer();

  // Serves clients until stop is set or a client sends "quit".
  void run(std::atomic<bool>& stop);

  // Executes one parsed request and returns the reply object (with "id"
  // echoed). Never throws.
  nlohmann::json execute(const nlohmann::json& request, std::atomic<bool>& stop);

 private:
  nlohmann::json dispatch(const std::string& cmd, const nlohmann::json& args,
                          std::atomic<bool>& stop);
  template <class F>
  void on_worker(engine::Engine& e, F&& fn);
  engine::Engine& owner_of(uint32_t session) {
    return *engines_[engine::Engine::owner(session, uint16_t(engines_.size()))];
  }
  // Adds a session's part on every worker that holds some of its streams
  // (the home part first). Throws CommandError: InvalidParameter for
  // parameters a worker refused, GenericError when one failed or did not
  // answer (the parts already added are cancelled).
  void add_session_parts(const engine::SessionParams& p);
  // Every session, each as one snapshot: its home part with the other
  // parts' counters merged in.
  std::vector<engine::SessionInfo> all_session_infos();
  void broadcast(const nlohmann::json& event);
  void broadcast_session(const nlohmann::json& session);

  // Orchestrated migrations (source side): QEMU driven over QMP, progress
  // followed and the postcopy policy applied from the control loop.
  struct Migration {
    std::unique_ptr<QmpClient> qmp;
    uint64_t started_ns = 0;
    bool postcopy = false;          // a postcopy policy (QEMU's postcopy-ram on)
    double switchover_after_s = 0;  // ... switch at this age at the latest
    bool postcopy_started = false;
    std::string decision;           // why it switched
    uint64_t watched_sync = 0;      // the watchdog's last judged dirty sync
    unsigned behind_passes = 0;     // ... passes in a row it fell behind
    bool done = false;
    std::string phase = "negotiating";
    nlohmann::json progress = nlohmann::json::object();
  };
  nlohmann::json migrate(const nlohmann::json& args);
  // Why the migration should switch to postcopy now ("": not yet).
  std::string switchover_decision(Migration& m, const nlohmann::json& ram, uint64_t now);
  // The watchdog switches when the dirty rate stays at or above this share
  // of the link's for this many passes over RAM.
  static constexpr double kWatchdogShare = 0.9;
  static constexpr unsigned kWatchdogPasses = 2;
  nlohmann::json accept_offer(const nlohmann::json& offer, const Bytes& session_key);
  void tick();
  // The page store: a source session of a named VM logs its pages; once
  // every part handed its captures in, they become the VM's image.
  void start_capture(engine::SessionParams& p, uint64_t ram_bytes);
  void collect_captures();
  nlohmann::json store_json();
  // Compares a VM's image, page by page (decoded, hash-checked), with a
  // RAM dump whose page k is the block's page k (pmemsave of a VM whose
  // block is mapped from guest address 0: pc.ram below 4 GiB).
  nlohmann::json store_check(const std::string& vm, const std::string& file, const std::string& block);
  nlohmann::json session_json(const engine::SessionInfo& info);
  std::optional<engine::SessionInfo> session_info(uint32_t id);
  std::string metrics_text();
  void serve_metrics(int fd);

  std::string path_;
  std::vector<engine::Engine*> engines_;
  DaemonIdentity id_;
  int listen_fd_ = -1;
  int metrics_fd_ = -1;
  std::unique_ptr<PeerServer> peer_server_;
  std::unique_ptr<TlsContext> peer_client_tls_;  // for migrate (source side)
  // Peer-channel offers refused because the two sides' --encrypt differed
  // (written by the peer thread and the control thread).
  std::atomic<uint64_t> encrypt_refusals_{0};
  std::map<uint32_t, Migration> migrations_;
  std::unique_ptr<store::PageStore> store_;
  // By session id and role (a daemon may be one session's source and another's destination).
  std::map<std::pair<uint32_t, engine::Role>, std::shared_ptr<store::CaptureBin>> captures_pending_;
  // Images being merged and inflated on a thread of their own (a 2 GiB VM
  // takes about a second): the control loop keeps answering meanwhile.
  struct Merged {
    std::string vm;
    std::shared_ptr<store::Image> img;
    std::string why;
    uint64_t ms = 0;
  };
  std::vector<std::future<Merged>> merging_;
  struct StoreStats {
    uint64_t images_made = 0;
    uint64_t captures_dropped = 0;  // no image made: the migration failed, or writes were not all seen
    std::string last_dropped;       // why, for the last of them
    uint64_t last_merge_ms = 0;     // how long the last merge took on the control thread
  } store_stats_;
  uint64_t last_tick_ns_ = 0;
  int epoll_fd_ = -1;
  struct Client {
    std::string line;           // bytes of an incomplete request line
    uint64_t line_since_ns = 0;  // when its first byte came (0: none pending)
  };
  std::map<int, Client> clients_;
  void cut_off(std::map<int, Client>::iterator it, const std::string& why);
  ControlStats stats_;
  // Source side of the peer channel: offers that failed, of them because
  // the destination could not prove it holds our key.
  uint64_t offers_failed_ = 0, offer_auth_failures_ = 0;
};

}  // namespace mm::control
