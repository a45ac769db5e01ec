// What the parts of one session on different workers share
// (docs/ARCHITECTURE.md §4). A session's streams are spread over the
// workers (wire::stream_queue); each worker holding some of them has its
// own part (a Session object with its own Connection, QEMU channels and
// page pipeline) and the home part, on session % workers, coordinates:
// the state machine, liveness, the pacer's shares, completion. Every field
// below is written by one part only and read by the others; the rest goes
// through the workers' task rings (Engine::post), off the page path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

#include "dataplane/store/PageTable.hpp"
#include "dataplane/wire/Mmp.hpp"

namespace mm::engine {

inline constexpr uint16_t kMaxWorkers = 64;

class SessionShare {
 public:
  // spread: the streams follow wire::stream_queue; otherwise all of them
  // stay with the home part (a source whose unchanged filter, shared by
  // all its multifd channels, must have one owner).
  SessionShare(uint32_t session, uint16_t workers, bool spread)
      : session_(session), workers_(workers < 1 ? 1 : workers),
        home_(wire::stream_queue(session, 0, workers_)), spread_(spread && workers_ > 1) {}

  uint32_t session() const { return session_; }
  uint16_t workers() const { return workers_; }
  uint16_t home() const { return home_; }
  bool spread() const { return spread_; }
  // The worker whose part owns `stream`.
  uint16_t owner(uint16_t stream) const {
    return spread_ ? wire::stream_queue(session_, stream, workers_) : home_;
  }

  // Written by the part on worker w (its slot), read by the others.
  struct alignas(64) Part {
    std::atomic<bool> present{false};     // a part exists on this worker
    std::atomic<bool> heard{false};       // it has had a packet from the peer
    std::atomic<bool> done{false};        // all its streams are finished and acknowledged
    std::atomic<uint64_t> last_rx_ns{0};  // its connection's newest packet from the peer
    std::atomic<uint16_t> backlog{0};     // its streams with packets waiting to be sent
    std::atomic<uint64_t> pages{0};       // pages its flows took apart or rebuilt
  };
  Part& part(uint16_t w) { return parts_[w]; }
  const Part& part(uint16_t w) const { return parts_[w]; }

  // Written by the home part.
  std::atomic<bool> main_attached{false};     // the main channel is connected to QEMU
  std::atomic<uint16_t> multifd_channels{0};  // source: QEMU's multifd channels so far
  // Source, warm re-migration: the page table of the destination's image,
  // published once by the home part when its last STORE_TABLE arrived
  // (release), read by every part's flows (acquire); immutable from then.
  enum class Table : uint8_t { none, expected, ready, failed };
  std::atomic<Table> table_state{Table::none};
  void publish_table(std::unique_ptr<const store::PageTable> t) {
    table_ = std::move(t);
    table_state.store(Table::ready, std::memory_order_release);
  }
  const store::PageTable* table() const {
    return table_state.load(std::memory_order_acquire) == Table::ready ? table_.get() : nullptr;
  }

 private:
  uint32_t session_;
  uint16_t workers_;
  uint16_t home_;
  bool spread_;
  std::array<Part, kMaxWorkers> parts_{};
  std::unique_ptr<const store::PageTable> table_;
};

}  // namespace mm::engine
