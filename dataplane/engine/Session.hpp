// One migration session as the worker lcore sees it: its transport
// connection, its QEMU channels, its state and counters. Only the worker
// that owns it touches it; the control plane gets SessionInfo snapshots.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/qemu/ChannelClassifier.hpp"
#include "dataplane/qemu/ChannelRelay.hpp"
#include "dataplane/qemu/UnixSocket.hpp"
#include "dataplane/transport/Connection.hpp"
#include "dataplane/wire/AuthTag.hpp"

namespace mm::engine {

enum class Role { source, destination };
// The dataplane's part of the session state machine (ARCHITECTURE.md §6);
// the control plane adds negotiating and postcopy, which it sees from QMP.
// completing: the local QEMU has closed its side (everything it had to say
// is queued); the session completes once the peer has all of it and has
// closed its side too.
enum class SessionState { prepared, precopy, completing, completed, failed, cancelled };
const char* to_string(Role r);
const char* to_string(SessionState s);
inline bool is_terminal(SessionState s) {
  return s == SessionState::completed || s == SessionState::failed ||
         s == SessionState::cancelled;
}

struct SessionCounters {
  uint64_t qemu_bytes_in = 0;   // read from the local QEMU
  uint64_t qemu_bytes_out = 0;  // written to the local QEMU
  transport::ConnectionStats conn;
  transport::SenderStats tx;       // summed over streams
  transport::ReceiverStats rx;
  uint64_t rejected_channels = 0;  // QEMU connections refused (unknown kind, duplicates)
  uint64_t multifd_channels = 0;   // multifd channels relayed
};

struct SessionInfo {
  uint32_t id = 0;
  Role role = Role::source;
  SessionState state = SessionState::prepared;
  std::string error;
  std::string qemu_uri;  // source: where QEMU migrates to; destination: QEMU's -incoming
  std::string peer;      // fabric address of the peer, once known
  uint64_t max_bandwidth = 0;
  bool authenticated = false;  // MMP packets carry the session key's tag
  uint64_t created_ns = 0, started_ns = 0, finished_ns = 0;
  SessionCounters counters;
};

struct SessionParams {
  uint32_t id = 0;
  Role role = Role::source;
  std::string qemu_uri;
  transport::PeerAddress peer;  // source: the destination's fabric address
  uint16_t peer_udp_port = 0;   // destination: the source's base UDP port
  uint64_t max_bandwidth = 0;   // pacer for what this side sends, wire bytes/s (0: none)
  std::optional<wire::AuthSecret> auth;  // from the peer channel's session key
};

class Session {
 public:
  // QEMU allows up to 255 multifd channels; a session relays up to 16, each
  // on its own stream (stream 0 is the main channel).
  static constexpr uint16_t kMaxMultifdChannels = 16;
  static constexpr uint16_t kStreams = 1 + kMaxMultifdChannels;

  // Throws std::invalid_argument / std::runtime_error on a bad URI or a
  // socket that cannot be opened: the control plane reports it.
  Session(const SessionParams& p, const transport::TransportConfig& cfg, uint64_t now);

  uint32_t id() const { return info_.id; }
  SessionState state() const { return info_.state; }
  transport::Connection* connection() { return conn_.get(); }

  // A valid packet of this session from `from`. Returns false (and counts)
  // when it breaks the protocol: the session then fails.
  void on_packet(const wire::Header& h, std::span<const uint8_t> payload,
                 const transport::PeerAddress& from, uint64_t now);
  // Moves bytes between QEMU and the streams and sends what is due; returns
  // whether it did any work (for the idle policy).
  bool poll(uint64_t now, transport::DatagramPort& port);

  void cancel(uint64_t now, const std::string& why);
  // True once a terminal session no longer needs its transport (the peer
  // had time to hear our last ACKs); the engine then frees its buffers.
  bool lingering_done(uint64_t now) const;
  void release_transport() {
    final_counters_ = info().counters;
    conn_.reset();
  }

  SessionInfo info() const;
  uint64_t qemu_bytes_in() const;
  uint64_t qemu_bytes_out() const;
  // The state changed since the last call (for events).
  bool take_state_change() {
    const bool c = state_changed_;
    state_changed_ = false;
    return c;
  }

 private:
  void fail(uint64_t now, const std::string& why);
  bool accept_channels(uint64_t now);
  bool connect_channels(uint64_t now);
  bool all_finished() const;
  void attach(uint16_t stream, int fd, uint64_t now);
  void finish(uint64_t now, SessionState s);

  SessionInfo info_;
  transport::TransportConfig cfg_;
  std::unique_ptr<transport::Connection> conn_;
  qemu::UnixListener listener_;  // source only
  std::string qemu_path_;
  // Stream 0: the main channel; stream 1 + k: multifd channel k.
  std::vector<std::unique_ptr<qemu::ChannelRelay>> relays_;
  std::vector<int> unclassified_;  // source: accepted, first bytes not seen yet
  uint16_t peer_udp_port_ = 0;
  bool heard_from_peer_ = false;
  bool state_changed_ = true;
  uint64_t rejected_channels_ = 0;
  uint16_t multifd_channels_ = 0;
  uint64_t connect_busy_since_ = 0;  // destination QEMU's backlog was full
  uint64_t qemu_in_ = 0, qemu_out_ = 0;  // kept after the relay closes
  SessionCounters final_counters_;       // kept after the transport is freed
};

}  // namespace mm::engine
