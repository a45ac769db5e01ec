// The worker's poll loop (ARCHITECTURE.md §3): port rx -> validation ->
// sessions -> QEMU sockets and back -> port tx, with an idle policy. The
// control plane reaches it only through run_on_worker() (an rte_ring of
// tasks) and session events (an rte_ring + eventfd).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "dataplane/engine/Session.hpp"
#include "dataplane/transport/DatagramPort.hpp"
#include "dataplane/transport/TransportConfig.hpp"
#include "dataplane/wire/Mmp.hpp"

struct rte_ring;

namespace mm::engine {

enum class IdlePolicy { spin, backoff };

struct EngineConfig {
  transport::TransportConfig transport;
  IdlePolicy idle = IdlePolicy::backoff;
  uint32_t backoff_max_us = 1000;
};

// Counters of the receive path that belong to no session. Written by the
// worker, read by the control thread.
struct EngineStats {
  std::atomic<uint64_t> loops{0};
  std::atomic<uint64_t> idle_sleeps{0};
  std::atomic<uint64_t> rx_datagrams{0};
  std::atomic<uint64_t> rx_invalid[size_t(wire::DecodeError::count_)]{};
  std::atomic<uint64_t> rx_unknown_session{0};
  std::atomic<uint64_t> rx_bad_auth{0};
  std::atomic<uint64_t> rx_wrong_peer{0};
  std::atomic<uint64_t> rx_late{0};  // for a session whose transport was already freed
};

uint64_t now_ns();

class Engine {
 public:
  Engine(transport::DatagramPort& port, const EngineConfig& cfg);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The worker loop; returns when stop becomes true.
  void run(const std::atomic<bool>& stop);

  // Runs fn on the worker thread and waits for it. Returns false when the
  // worker did not run it within timeout (fn then runs later or never; it
  // must own everything it touches).
  bool run_on_worker(std::function<void()> fn, std::chrono::milliseconds timeout);

  // Worker-side operations, called from run_on_worker tasks.
  void add_session(const SessionParams& p);  // throws std::invalid_argument / runtime_error
  bool cancel_session(uint32_t id, const std::string& why);
  std::optional<SessionInfo> session_info(uint32_t id) const;
  std::vector<SessionInfo> session_infos() const;

  // Events: an fd that becomes readable when state changes are queued.
  int event_fd() const { return event_fd_; }
  std::vector<SessionInfo> take_events();

  const EngineStats& stats() const { return stats_; }
  const EngineConfig& config() const { return cfg_; }

 private:
  struct Task;
  void handle_rx(uint64_t now);
  bool run_tasks();
  void publish(const SessionInfo& info);

  transport::DatagramPort& port_;
  EngineConfig cfg_;
  std::map<uint32_t, std::unique_ptr<Session>> sessions_;
  rte_ring* tasks_ = nullptr;
  rte_ring* events_ = nullptr;
  int event_fd_ = -1;
  EngineStats stats_;
};

}  // namespace mm::engine
