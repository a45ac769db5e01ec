#include "dataplane/engine/Engine.hpp"

#include <rte_pause.h>
#include <rte_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

namespace mm::engine {

namespace {
constexpr uint16_t kRxBurst = 32;
constexpr unsigned kRingSize = 1024;
std::atomic<unsigned> ring_serial{0};

rte_ring* make_ring(const char* what) {
  const std::string name = std::string("mm_") + what + std::to_string(ring_serial++);
  rte_ring* r = rte_ring_create(name.c_str(), kRingSize, SOCKET_ID_ANY, RING_F_SC_DEQ);
  if (!r) throw std::runtime_error(std::string("rte_ring_create(") + name + ") failed");
  return r;
}
}  // namespace

uint64_t now_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

struct Engine::Task {
  std::function<void()> fn;
  std::promise<void> done;
};

Engine::Engine(transport::DatagramPort& port, const EngineConfig& cfg)
    : port_(port), cfg_(cfg) {
  tasks_ = make_ring("tasks");
  events_ = make_ring("events");
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::runtime_error("eventfd() failed");
}

Engine::~Engine() {
  void* p;
  while (rte_ring_dequeue(tasks_, &p) == 0) delete static_cast<std::shared_ptr<Task>*>(p);
  while (rte_ring_dequeue(events_, &p) == 0) delete static_cast<SessionInfo*>(p);
  rte_ring_free(tasks_);
  rte_ring_free(events_);
  ::close(event_fd_);
}

bool Engine::run_on_worker(std::function<void()> fn, std::chrono::milliseconds timeout) {
  auto task = std::make_shared<Task>();
  task->fn = std::move(fn);
  auto done = task->done.get_future();
  auto* handle = new std::shared_ptr<Task>(task);
  if (rte_ring_mp_enqueue(tasks_, handle) != 0) {
    delete handle;
    return false;
  }
  return done.wait_for(timeout) == std::future_status::ready;
}

bool Engine::run_tasks() {
  void* p;
  bool any = false;
  while (rte_ring_sc_dequeue(tasks_, &p) == 0) {
    std::unique_ptr<std::shared_ptr<Task>> handle(static_cast<std::shared_ptr<Task>*>(p));
    try {
      (*handle)->fn();
      (*handle)->done.set_value();
    } catch (...) {
      // Tasks report their own errors; this only keeps the worker alive.
      (*handle)->done.set_exception(std::current_exception());
    }
    any = true;
  }
  return any;
}

void Engine::publish(const SessionInfo& info) {
  auto* copy = new SessionInfo(info);
  if (rte_ring_mp_enqueue(events_, copy) != 0) {
    delete copy;  // nobody is reading events: drop them rather than block
    return;
  }
  const uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(event_fd_, &one, sizeof one);
}

std::vector<SessionInfo> Engine::take_events() {
  uint64_t n;
  [[maybe_unused]] auto r = ::read(event_fd_, &n, sizeof n);
  std::vector<SessionInfo> out;
  void* p;
  while (rte_ring_sc_dequeue(events_, &p) == 0) {
    std::unique_ptr<SessionInfo> info(static_cast<SessionInfo*>(p));
    out.push_back(*info);
  }
  return out;
}

void Engine::add_session(const SessionParams& p) {
  if (p.id == 0) throw std::invalid_argument("session id 0 is reserved");
  auto it = sessions_.find(p.id);
  if (it != sessions_.end()) {
    if (!is_terminal(it->second->state())) {
      throw std::invalid_argument("session " + std::to_string(p.id) + " already exists (" +
                                  to_string(it->second->state()) + ")");
    }
    sessions_.erase(it);  // an ended session's id may be reused
  }
  sessions_.emplace(p.id, std::make_unique<Session>(p, cfg_.transport, now_ns()));
}

bool Engine::cancel_session(uint32_t id, const std::string& why) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  it->second->cancel(now_ns(), why);
  return true;
}

std::optional<SessionInfo> Engine::session_info(uint32_t id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second->info();
}

std::vector<SessionInfo> Engine::session_infos() const {
  std::vector<SessionInfo> out;
  for (auto& [id, s] : sessions_) out.push_back(s->info());
  return out;
}

void Engine::handle_rx(uint64_t now) {
  std::array<transport::RxDatagram, kRxBurst> rx;
  const uint16_t n = port_.rx_burst(rx);
  if (n == 0) return;
  stats_.rx_datagrams.fetch_add(n, std::memory_order_relaxed);
  for (uint16_t i = 0; i < n; ++i) {
    wire::Header h;
    std::span<const uint8_t> payload;
    const wire::DecodeError e = wire::decode_packet({rx[i].data, rx[i].len}, h, payload);
    if (e != wire::DecodeError::ok) {
      stats_.rx_invalid[size_t(e)].fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto it = sessions_.find(h.session);
    if (it == sessions_.end()) {
      stats_.rx_unknown_session.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // Sessions carry no key until the peer channel negotiates one, so a
    // non-zero auth field is a packet we cannot vouch for.
    if (h.auth != 0) {
      stats_.rx_bad_auth.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    Session& s = *it->second;
    transport::Connection* c = s.connection();
    if (!c) {
      stats_.rx_late.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (c->has_peer() && c->peer().ip != rx[i].from.ip) {
      stats_.rx_wrong_peer.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    s.on_packet(h, payload, rx[i].from, now);
  }
  port_.rx_release();
}

void Engine::run(const std::atomic<bool>& stop) {
  uint32_t idle_rounds = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    stats_.loops.fetch_add(1, std::memory_order_relaxed);
    const uint64_t now = now_ns();
    const uint64_t rx_before = stats_.rx_datagrams.load(std::memory_order_relaxed);
    handle_rx(now);
    bool work = stats_.rx_datagrams.load(std::memory_order_relaxed) != rx_before;
    work |= run_tasks();
    for (auto& [id, s] : sessions_) {
      work |= s->poll(now, port_);
      if (s->take_state_change()) publish(s->info());
      if (s->lingering_done(now)) s->release_transport();
    }
    if (work) {
      idle_rounds = 0;
      continue;
    }
    if (cfg_.idle == IdlePolicy::spin) {
      rte_pause();
      continue;
    }
    // Back off: sleep 1, 2, 4 ... µs up to the profile's maximum, so a
    // shared core is given back while nothing moves.
    const uint32_t us = std::min<uint32_t>(1u << std::min<uint32_t>(idle_rounds, 20),
                                           cfg_.backoff_max_us);
    ++idle_rounds;
    stats_.idle_sleeps.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
}

}  // namespace mm::engine
