// The worker's poll loop (docs/ARCHITECTURE.md §3): port rx -> validation ->
// sessions -> QEMU sockets and back -> port tx, with an idle policy. The
// control plane reaches it only through run_on_worker() (an rte_ring of
// tasks) and session events (an rte_ring + eventfd).
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/engine/Session.hpp"
#include "dataplane/transport/DatagramPort.hpp"
#include "dataplane/transport/TransportConfig.hpp"
#include "dataplane/wire/Mmp.hpp"

struct rte_ring;
struct rte_mempool;

namespace mm::engine {

enum class IdlePolicy { spin, backoff };

struct EngineConfig {
  transport::TransportConfig transport;
  IdlePolicy idle = IdlePolicy::backoff;
  uint32_t backoff_max_us = 1000;
  // compressdev for DEFLATE pages (e.g. "compress_isal0"); empty: none.
  std::string compressdev;
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
  // Encrypted sessions: GCM tag did not verify / transmission seen before.
  std::atomic<uint64_t> rx_bad_tag{0};
  std::atomic<uint64_t> rx_replayed{0};
  std::atomic<uint64_t> rx_wrong_peer{0};
  std::atomic<uint64_t> rx_late{0};  // for a session whose transport was already freed
  // Datagrams that arrived on this worker's queue for a session another
  // worker owns (software RSS fix-up), and those taken in from others.
  std::atomic<uint64_t> rx_handoff_out{0};
  std::atomic<uint64_t> rx_handoff_in{0};
  std::atomic<uint64_t> rx_handoff_dropped{0};
  std::atomic<uint64_t> sessions{0};
  // Pages this worker's flows took apart (source) or rebuilt (destination),
  // over every session part it held: how a migration is spread over the
  // workers. Refreshed every millisecond or so.
  std::atomic<uint64_t> pages{0};
};

uint64_t now_ns();

// One Engine per worker lcore, each with its own queue of the fabric port
// and its parts of the sessions: a session's streams are spread over the
// workers (wire::stream_queue; its home part, on id % workers, keeps the
// state machine). A datagram that lands on another worker's queue is handed
// to its owner through that owner's rte_ring (NICs with flow rules never
// need it; AF_PACKET fanout does).
class Engine final : public PartLink {
 public:
  Engine(transport::DatagramPort& port, const EngineConfig& cfg, uint16_t index = 0,
         uint16_t workers = 1);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Every worker's engine, indexed by worker (before any run()).
  void connect(const std::vector<Engine*>& all) { all_ = all; }
  uint16_t index() const { return index_; }
  // The worker of a session's home part.
  static uint16_t owner(uint32_t session, uint16_t workers) { return wire::stream_queue(session, 0, workers); }
  uint16_t workers() const { return workers_; }

  // The worker loop; returns when stop becomes true.
  void run(const std::atomic<bool>& stop);

  // Runs fn on the worker thread and waits for it. Returns false when the
  // worker did not run it within timeout (fn then runs later or never; it
  // must own everything it touches).
  bool run_on_worker(std::function<void()> fn, std::chrono::milliseconds timeout);

  // Runs fn on the worker thread without waiting for it (from any thread).
  // False when the worker's task ring is full.
  bool post_task(std::function<void()> fn);
  // PartLink: fn on worker w's part of the session `share` is of.
  void post(uint16_t worker, const SessionShare* share, std::function<void(Session&, uint64_t)> fn,
            std::function<void()> if_gone) override;

  // Worker-side operations, called from run_on_worker tasks. add_session
  // adds this worker's part of a session (share: every part's, from the
  // control plane; null: a session on this worker alone).
  void add_session(const SessionParams& p, std::shared_ptr<SessionShare> share = {});  // throws std::invalid_argument / runtime_error
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
  struct Handoff;
  // Puts a task on this worker's ring; false when it is full.
  bool enqueue(std::shared_ptr<Task> task);
  // Reads the queue until it is empty or a bound; true when it was emptied.
  bool handle_rx(uint64_t now);
  uint16_t handle_rx_burst(uint64_t now);
  unsigned take_handoffs(uint64_t now);
  // forwarded: it was handed over already (a worker that has no part for
  // it hands it on to the session's home, once).
  void hand_off(uint16_t owner, const wire::Header& h, std::span<const uint8_t> payload,
                const transport::PeerAddress& from, bool forwarded = false);
  void dispatch(const wire::Header& h, std::span<const uint8_t> payload,
                const transport::PeerAddress& from, uint64_t now, bool forwarded = false);
  void count_pages(uint64_t now);
  bool run_tasks();
  void publish(const SessionInfo& info);

  // A session that released its transport leaves the polled table; its
  // last SessionInfo stays for queries (the newest kMaxEnded of them).
  void retire(std::map<uint32_t, std::unique_ptr<Session>>::iterator it);
  static constexpr size_t kMaxEnded = 1024;

  transport::DatagramPort& port_;
  EngineConfig cfg_;
  std::map<uint32_t, std::unique_ptr<Session>> sessions_;  // polled every loop
  std::map<uint32_t, SessionInfo> ended_;                  // released: info only
  std::deque<uint32_t> ended_order_;                       // oldest first
  uint16_t index_;
  uint16_t workers_;
  std::vector<Engine*> all_;
  rte_ring* tasks_ = nullptr;
  rte_ring* events_ = nullptr;
  rte_ring* inbound_ = nullptr;     // hand-offs from other workers
  rte_mempool* handoffs_ = nullptr;  // buffers this worker hands off
  int event_fd_ = -1;
  uint64_t last_drained_ns_ = 0;  // the receive queue was last read empty
  uint64_t pages_counted_ns_ = 0;
  uint64_t retired_pages_ = 0;    // pages of the parts that left the table
  EngineStats stats_;
  CodecSet codecs_;
};

}  // namespace mm::engine
