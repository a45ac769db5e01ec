#include "dataplane/engine/Engine.hpp"

#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <cstring>

namespace mm::engine {

namespace {
constexpr uint16_t kRxBurst = 32;
// Bursts one loop iteration reads at most before the sessions run.
constexpr uint32_t kMaxRxBursts = 16;
// Longest that retransmission timers wait for the receive queue to empty.
constexpr uint64_t kMaxTimerHoldNs = 2'000'000;
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

// A datagram in flight between workers: the validated header and a copy of
// the payload, plus where it came from.
struct Engine::Handoff {
  wire::Header header;
  transport::PeerAddress from;
  bool forwarded;
  uint32_t len;
  uint8_t payload[wire::kMaxPayload];
};

Engine::Engine(transport::DatagramPort& port, const EngineConfig& cfg, uint16_t index,
               uint16_t workers)
    : port_(port), cfg_(cfg), index_(index), workers_(workers),
      // Each worker has its own queue pair of the compressdev (memmotiond
      // configures one per worker), so DEFLATE runs on every worker.
      codecs_(cfg.compressdev, index) {
  tasks_ = make_ring("tasks");
  events_ = make_ring("events");
  if (workers_ > 1) {
    inbound_ = make_ring("handoff");
    const std::string name = "mm_handoff" + std::to_string(ring_serial++);
    handoffs_ = rte_mempool_create(name.c_str(), 2047, sizeof(Handoff), 64, 0, nullptr, nullptr,
                                   nullptr, nullptr, SOCKET_ID_ANY, 0);
    if (!handoffs_) throw std::runtime_error("rte_mempool_create(" + name + ") failed");
  }
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::runtime_error("eventfd() failed");
}

Engine::~Engine() {
  void* p;
  while (rte_ring_dequeue(tasks_, &p) == 0) delete static_cast<std::shared_ptr<Task>*>(p);
  while (rte_ring_dequeue(events_, &p) == 0) delete static_cast<SessionInfo*>(p);
  rte_ring_free(tasks_);
  rte_ring_free(events_);
  if (inbound_) {
    while (rte_ring_dequeue(inbound_, &p) == 0) rte_mempool_put(rte_mempool_from_obj(p), p);
    rte_ring_free(inbound_);
  }
  if (handoffs_) rte_mempool_free(handoffs_);
  ::close(event_fd_);
}

bool Engine::enqueue(std::shared_ptr<Task> task) {
  auto* handle = new std::shared_ptr<Task>(std::move(task));
  if (rte_ring_mp_enqueue(tasks_, handle) != 0) {
    delete handle;
    return false;
  }
  return true;
}

bool Engine::run_on_worker(std::function<void()> fn, std::chrono::milliseconds timeout) {
  auto task = std::make_shared<Task>();
  task->fn = std::move(fn);
  auto done = task->done.get_future();
  if (!enqueue(std::move(task))) return false;
  return done.wait_for(timeout) == std::future_status::ready;
}

bool Engine::post_task(std::function<void()> fn) {
  auto task = std::make_shared<Task>();
  task->fn = std::move(fn);
  return enqueue(std::move(task));
}

void Engine::post(uint16_t worker, const SessionShare* share, std::function<void(Session&, uint64_t)> fn,
                  std::function<void()> if_gone) {
  Engine* e = worker < all_.size() ? all_[worker] : nullptr;
  const uint32_t id = share->session();
  auto task = [e, share, id, fn = std::move(fn), if_gone]() {
    auto it = e->sessions_.find(id);
    // The same session, not a later one with its id (the share tells).
    if (it != e->sessions_.end() && it->second->share() == share) {
      fn(*it->second, now_ns());
    } else if (if_gone) {
      if_gone();
    }
  };
  if (!e || !e->post_task(std::move(task))) {
    if (if_gone) if_gone();
  }
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

void Engine::add_session(const SessionParams& p, std::shared_ptr<SessionShare> share) {
  if (p.id == 0) throw std::invalid_argument("session id 0 is reserved");
  if (!share) share = std::make_shared<SessionShare>(p.id, workers_, false);
  if (share->workers() != workers_ || share->session() != p.id) {
    throw std::logic_error("session " + std::to_string(p.id) + ": its parts are laid out for " +
                           std::to_string(share->workers()) + " workers, this daemon has " + std::to_string(workers_));
  }
  if (!share->spread() && owner(p.id, workers_) != index_) {
    throw std::logic_error("session " + std::to_string(p.id) + " belongs to worker " +
                           std::to_string(owner(p.id, workers_)) + ", not " + std::to_string(index_));
  }
  auto it = sessions_.find(p.id);
  if (it != sessions_.end()) {
    if (!is_terminal(it->second->state())) {
      throw std::invalid_argument("session " + std::to_string(p.id) + " already exists (" +
                                  to_string(it->second->state()) + ")");
    }
    sessions_.erase(it);  // an ended session's id may be reused
  }
  if (ended_.erase(p.id)) std::erase(ended_order_, p.id);
  auto session = std::make_unique<Session>(p, cfg_.transport, now_ns(), &codecs_, std::move(share), index_, this);
  // Send windows live in this worker's port buffers: sent by reference.
  if (transport::Connection* c = session->connection()) c->set_port_buffers(&port_);
  sessions_.emplace(p.id, std::move(session));
  stats_.sessions.store(sessions_.size() + ended_.size(), std::memory_order_relaxed);
}

void Engine::retire(std::map<uint32_t, std::unique_ptr<Session>>::iterator it) {
  ended_[it->first] = it->second->info();
  ended_[it->first].released = true;
  retired_pages_ += ended_[it->first].counters.pages.pages;
  ended_order_.push_back(it->first);
  while (ended_order_.size() > kMaxEnded) {
    ended_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
  sessions_.erase(it);
  stats_.sessions.store(sessions_.size() + ended_.size(), std::memory_order_relaxed);
}

bool Engine::cancel_session(uint32_t id, const std::string& why) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return ended_.count(id) > 0;  // already over: nothing to cancel
  it->second->cancel(now_ns(), why);
  return true;
}

std::optional<SessionInfo> Engine::session_info(uint32_t id) const {
  if (auto it = sessions_.find(id); it != sessions_.end()) return it->second->info();
  if (auto it = ended_.find(id); it != ended_.end()) return it->second;
  return std::nullopt;
}

std::vector<SessionInfo> Engine::session_infos() const {
  std::map<uint32_t, SessionInfo> all = ended_;
  for (auto& [id, s] : sessions_) all[id] = s->info();
  std::vector<SessionInfo> out;
  for (auto& [id, info] : all) out.push_back(std::move(info));
  return out;
}

void Engine::dispatch(const wire::Header& h, std::span<const uint8_t> payload,
                      const transport::PeerAddress& from, uint64_t now, bool forwarded) {
  auto it = sessions_.find(h.session);
  const uint16_t home = owner(h.session, workers_);
  if (it == sessions_.end() && home != index_ && !forwarded && !ended_.count(h.session)) {
    // No part here: the session keeps its streams on its home worker.
    hand_off(home, h, payload, from, true);
    return;
  }
  if (it == sessions_.end()) {
    // A session that ended and freed its transport may still hear from its
    // peer (a last retransmission, a CLOSE copy): late, not unknown.
    (ended_.count(h.session) ? stats_.rx_late : stats_.rx_unknown_session).fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Session& s = *it->second;
  transport::Connection* c = s.connection();
  if (!c) {
    stats_.rx_late.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // An encrypted session opens every datagram (GCM tag, replay window)
  // before anything of it is used; the plaintext replaces the payload. A
  // session with only a key accepts only packets tagged with it; one
  // without accepts only auth 0 (a tag it cannot check is a packet it
  // cannot trust).
  if (c->encrypted()) {
    const transport::Connection::Open o = c->open(h, payload);
    if (o != transport::Connection::Open::ok) {
      (o == transport::Connection::Open::replayed ? stats_.rx_replayed : stats_.rx_bad_tag)
          .fetch_add(1, std::memory_order_relaxed);
      return;
    }
  } else if (!c->authentic(h, payload)) {
    stats_.rx_bad_auth.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (c->has_peer() && c->peer().ip != from.ip) {
    stats_.rx_wrong_peer.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  s.on_packet(h, payload, from, now);
}

void Engine::hand_off(uint16_t owner_index, const wire::Header& h, std::span<const uint8_t> payload,
                      const transport::PeerAddress& from, bool forwarded) {
  void* obj = nullptr;
  if (owner_index >= all_.size() || rte_mempool_get(handoffs_, &obj) != 0) {
    stats_.rx_handoff_dropped.fetch_add(1, std::memory_order_relaxed);
    return;  // the sender retransmits what is lost here
  }
  auto* m = static_cast<Handoff*>(obj);
  m->header = h;
  m->from = from;
  m->forwarded = forwarded;
  m->len = uint32_t(payload.size());
  std::memcpy(m->payload, payload.data(), payload.size());
  if (rte_ring_mp_enqueue(all_[owner_index]->inbound_, m) != 0) {
    rte_mempool_put(handoffs_, m);
    stats_.rx_handoff_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  stats_.rx_handoff_out.fetch_add(1, std::memory_order_relaxed);
}

unsigned Engine::take_handoffs(uint64_t now) {
  if (!inbound_) return 0;
  void* objs[kRxBurst];
  const unsigned n = rte_ring_sc_dequeue_burst(inbound_, objs, kRxBurst, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    auto* m = static_cast<Handoff*>(objs[i]);
    dispatch(m->header, {m->payload, m->len}, m->from, now, m->forwarded);
    rte_mempool_put(rte_mempool_from_obj(m), m);
  }
  if (n) stats_.rx_handoff_in.fetch_add(n, std::memory_order_relaxed);
  return n;
}

bool Engine::handle_rx(uint64_t now) {
  // Read until the queue is empty (up to a bound, so the sessions' own
  // work still gets its turn): a worker back from a spell off its core
  // finds the ACKs that arrived meanwhile before any timer looks at them.
  for (uint32_t b = 0; b < kMaxRxBursts; ++b) {
    if (handle_rx_burst(now) < kRxBurst) return true;
  }
  return false;
}

uint16_t Engine::handle_rx_burst(uint64_t now) {
  std::array<transport::RxDatagram, kRxBurst> rx;
  const uint16_t n = port_.rx_burst(rx);
  if (n == 0) return 0;
  stats_.rx_datagrams.fetch_add(n, std::memory_order_relaxed);
  for (uint16_t i = 0; i < n; ++i) {
    wire::Header h;
    std::span<const uint8_t> payload;
    const wire::DecodeError e = wire::decode_packet({rx[i].data, rx[i].len}, h, payload);
    if (e != wire::DecodeError::ok) {
      stats_.rx_invalid[size_t(e)].fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const uint16_t own = wire::stream_queue(h.session, h.stream, workers_);
    if (own != index_) {
      hand_off(own, h, payload, rx[i].from);
      continue;
    }
    dispatch(h, payload, rx[i].from, now);
  }
  port_.rx_release();
  return n;
}

void Engine::count_pages(uint64_t now) {
  if (now - pages_counted_ns_ < 1'000'000) return;
  pages_counted_ns_ = now;
  uint64_t n = retired_pages_;
  for (auto& [id, s] : sessions_) n += s->pages();
  stats_.pages.store(n, std::memory_order_relaxed);
}

void Engine::run(const std::atomic<bool>& stop) {
  uint32_t idle_rounds = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    stats_.loops.fetch_add(1, std::memory_order_relaxed);
    const uint64_t now = now_ns();
    const uint64_t rx_before = stats_.rx_datagrams.load(std::memory_order_relaxed);
    bool drained = handle_rx(now);
    bool work = stats_.rx_datagrams.load(std::memory_order_relaxed) != rx_before;
    if (inbound_) {
      const unsigned taken = take_handoffs(now);
      work |= taken > 0;
      drained &= taken < kRxBurst;
    }
    work |= run_tasks();
    // Timers wait for unread datagrams, but not for ever: a queue that
    // never empties (another session receiving at line rate) must not
    // keep this one's probes and timeouts from firing.
    if (drained) last_drained_ns_ = now;
    const bool timers_ok = drained || now - last_drained_ns_ > kMaxTimerHoldNs;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      Session& s = *it->second;
      if (transport::Connection* c = s.connection()) c->set_timers_ok(timers_ok);
      work |= s.poll(now, port_);
      if (s.take_state_change()) publish(s.info());
      if (!s.lingering_done(now)) {
        ++it;
        continue;
      }
      s.release_transport();
      retire(it++);
    }
    // Every session's datagrams of this round leave in full bursts.
    port_.tx_flush();
    count_pages(now);
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
