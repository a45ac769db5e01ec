#include "dataplane/engine/Session.hpp"

#include <unistd.h>

#include <cstring>

namespace mm::engine {

namespace {
// Largest message a peer may send us on the main channel, and what is
// buffered toward a slow QEMU (it must hold one such message).
constexpr size_t kMaxMessage = 1 << 20;
constexpr size_t kQemuOutBuffer = 4 << 20;
}  // namespace

const char* to_string(Role r) { return r == Role::source ? "source" : "destination"; }

const char* to_string(SessionState s) {
  switch (s) {
    case SessionState::prepared: return "prepared";
    case SessionState::precopy: return "precopy";
    case SessionState::completing: return "completing";
    case SessionState::completed: return "completed";
    case SessionState::failed: return "failed";
    case SessionState::cancelled: return "cancelled";
  }
  return "unknown";
}

Session::Session(const SessionParams& p, const transport::TransportConfig& cfg, uint64_t now)
    : cfg_(cfg), relay_(kQemuOutBuffer), peer_udp_port_(p.peer_udp_port) {
  info_.id = p.id;
  info_.role = p.role;
  info_.qemu_uri = p.qemu_uri;
  info_.created_ns = now;
  qemu_path_ = qemu::unix_path_from_uri(p.qemu_uri);
  conn_ = std::make_unique<transport::Connection>(cfg, p.id, 1, kMaxMessage, now);
  conn_->set_max_bandwidth(p.max_bandwidth);
  info_.max_bandwidth = p.max_bandwidth;
  if (p.auth) conn_->set_auth(*p.auth);
  info_.authenticated = p.auth.has_value();
  if (p.role == Role::source) {
    listener_ = qemu::UnixListener(qemu_path_);
    conn_->set_peer(p.peer);
    info_.peer = transport::to_string(p.peer);
  }
}

void Session::on_packet(const wire::Header& h, std::span<const uint8_t> payload,
                        const transport::PeerAddress& from, uint64_t now) {
  if (!conn_) return;
  if (info_.role == Role::destination && !heard_from_peer_) {
    // The destination learns where the source is from its first packet.
    transport::PeerAddress peer{from.mac, from.ip, peer_udp_port_};
    conn_->set_peer(peer);
    info_.peer = transport::to_string(peer);
  }
  heard_from_peer_ = true;
  if (!conn_->on_packet(h, payload, now)) {
    fail(now, "protocol error from peer: " + conn_->error());
    return;
  }
  if (conn_->peer_closed() && !is_terminal(info_.state)) {
    const std::string text = conn_->peer_close_text();
    if (conn_->peer_close_reason() == wire::CloseReason::cancelled) {
      info_.error = "cancelled by peer: " + text;
      finish(now, SessionState::cancelled);
    } else {
      fail(now, "peer failed the session: " + text);
    }
  }
}

bool Session::poll(uint64_t now, transport::DatagramPort& port) {
  bool work = false;
  if (!is_terminal(info_.state)) {
    if (info_.role == Role::source) {
      for (int fd; (fd = listener_.accept_one()) >= 0;) {
        if (!relay_.attached()) {
          relay_.attach(fd);
          info_.state = SessionState::precopy;
          info_.started_ns = now;
          state_changed_ = true;
        } else {
          // A second connection is a multifd channel: not relayed by this
          // version, so the migration cannot be carried correctly.
          ::close(fd);
          ++rejected_channels_;
          fail(now, "QEMU opened an extra migration channel (multifd?), which this version "
                    "does not relay; disable the multifd capability");
          return true;
        }
        work = true;
      }
    } else if (!relay_.attached() && heard_from_peer_ && !conn_->receiver(0).drained()) {
      const int fd = qemu::connect_unix(qemu_path_);
      if (fd < 0) {
        fail(now, "cannot connect to the destination QEMU at " + qemu_path_ + ": " +
                      std::strerror(-fd));
        return true;
      }
      relay_.attach(fd);
      info_.state = SessionState::precopy;
      info_.started_ns = now;
      state_changed_ = true;
      work = true;
    }
    if (relay_.attached()) {
      if (relay_.pump_in(conn_->sender(0)) > 0) work = true;
      const uint64_t out_before = relay_.bytes_to_qemu();
      if (!relay_.pump_out(conn_->receiver(0)) || !relay_.error().empty()) {
        fail(now, relay_.error());
        return true;
      }
      if (relay_.bytes_to_qemu() != out_before) work = true;
      if (relay_.finished() && conn_->sender(0).idle()) {
        finish(now, SessionState::completed);
      } else if (relay_.local_fin_queued() && info_.state == SessionState::precopy) {
        info_.state = SessionState::completing;
        state_changed_ = true;
      }
    }
    const bool liveness_applies = info_.role == Role::source || heard_from_peer_;
    if (!is_terminal(info_.state) && liveness_applies && conn_->peer_silent(now)) {
      fail(now, "no packet from the peer " + info_.peer + " for " +
                    std::to_string(cfg_.dead_timeout_ns / 1'000'000) +
                    " ms (is the destination daemon up and the session prepared?)");
    }
  }
  if (conn_ && conn_->flush(now, port) > 0) work = true;
  return work;
}

void Session::cancel(uint64_t now, const std::string& why) {
  if (is_terminal(info_.state)) return;
  info_.error = why;
  if (conn_) conn_->close(wire::CloseReason::cancelled, why);
  finish(now, SessionState::cancelled);
}

void Session::fail(uint64_t now, const std::string& why) {
  if (is_terminal(info_.state)) return;
  info_.error = why;
  if (conn_) conn_->close(wire::CloseReason::failed, why);
  finish(now, SessionState::failed);
}

void Session::finish(uint64_t now, SessionState s) {
  info_.state = s;
  info_.finished_ns = now;
  state_changed_ = true;
  qemu_in_ = relay_.bytes_from_qemu();
  qemu_out_ = relay_.bytes_to_qemu();
  // Closing QEMU's socket is what makes a source QEMU abandon a migration
  // that can no longer complete; its VM keeps running.
  relay_.close();
  listener_.close();
  if (conn_) conn_->set_keepalive(false);
}

bool Session::lingering_done(uint64_t now) const {
  return conn_ && is_terminal(info_.state) && now > info_.finished_ns &&
         now - info_.finished_ns > cfg_.dead_timeout_ns;
}

SessionInfo Session::info() const {
  SessionInfo i = info_;
  SessionCounters& c = i.counters;
  c.qemu_bytes_in = is_terminal(info_.state) ? qemu_in_ : relay_.bytes_from_qemu();
  c.qemu_bytes_out = is_terminal(info_.state) ? qemu_out_ : relay_.bytes_to_qemu();
  c.rejected_channels = rejected_channels_;
  if (conn_) {
    c.conn = conn_->stats();
    c.tx = conn_->sender(0).stats();
    c.rx = conn_->receiver(0).stats();
  } else {
    c = final_counters_;
  }
  return i;
}

}  // namespace mm::engine
