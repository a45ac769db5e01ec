// The daemon's control socket (docs/ARCHITECTURE.md §9): QMP conventions over a
// unix stream socket, one JSON object per line. Runs on the main lcore,
// never on the packet path; reaches the dataplane only through the engine.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/PeerChannel.hpp"
#include "control/QmpClient.hpp"
#include "dataplane/engine/Engine.hpp"

namespace mm::control {

// An error reply: QMP's {"error": {"class": ..., "desc": ...}}.
class CommandError : public std::runtime_error {
 public:
  CommandError(std::string cls, const std::string& desc)
      : std::runtime_error(desc), cls_(std::move(cls)) {}
  const std::string& error_class() const { return cls_; }

 private:
  std::string cls_;
};

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
};

class ControlServer {
 public:
  // Largest request line accepted; a longer one is refused and the client
  // disconnected (it could only be garbage or an attack on memory).
  static constexpr size_t kMaxRequest = 1 << 20;

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
    double postcopy_after_s = 0;  // 0: never switch
    bool postcopy_started = false;
    bool done = false;
    std::string phase = "negotiating";
    nlohmann::json progress = nlohmann::json::object();
  };
  nlohmann::json migrate(const nlohmann::json& args);
  nlohmann::json accept_offer(const nlohmann::json& offer, const Bytes& session_key);
  void tick();
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
  uint64_t last_tick_ns_ = 0;
  int epoll_fd_ = -1;
  std::map<int, std::string> clients_;  // fd -> bytes of an incomplete line
};

}  // namespace mm::control
