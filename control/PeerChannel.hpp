// The peer channel between daemons (docs/ARCHITECTURE.md §9): TCP, a
// one-line plain banner from the destination (protocol version and how it
// authenticates, so that a mismatch gets a clear error), then TLS 1.3 with
// the pre-shared key as an external PSK or X.509 certificates
// (control/PeerTls.hpp), then one JSON object per line inside it: both
// sides' capabilities, and the source's offer of a session that the
// destination accepts or refuses. The session key that MMP's encryption
// and tags derive from is exported from the TLS connection (RFC 8446 7.5).
// The destination serves many connections at once, each with its own
// deadline, so a slow or hostile client holds only its own.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <mutex>

#include "control/PeerTls.hpp"
#include "control/Psk.hpp"

namespace mm::control {

// Version of this handshake (2: TLS 1.3); MMP's own version travels beside it.
inline constexpr int kPeerProtocol = 2;

// What a daemon tells its peer about itself.
struct Capabilities {
  std::string version;  // memmotion release
  int mmp = 1;
  uint32_t mtu = 0;
  uint16_t queues = 1;
  std::string ip, mac;
  uint16_t udp_port = 0;
  std::vector<std::string> codecs{"none"};
  nlohmann::json to_json() const;
};

// Raised for every refusal, with a message naming both sides' values.
class PeerError : public std::runtime_error {
 public:
  PeerError(std::string cls, const std::string& what) : std::runtime_error(what), cls_(std::move(cls)) {}
  const std::string& error_class() const { return cls_; }

 private:
  std::string cls_;
};

// Checks the peer's capabilities against ours; throws PeerError naming
// both sides' values on a mismatch.
void check_compatible(const Capabilities& ours, const nlohmann::json& theirs, bool we_are_source);

struct OfferResult {
  nlohmann::json accept;  // the destination's reply
  Bytes session_key;
};

// Source side: connect, TLS 1.3 (both sides authenticated), offer
// `offer`. Throws PeerError (classes PeerError, AuthError, VersionMismatch,
// CapabilityMismatch).
OfferResult offer_session(const std::string& peer, const TlsContext& tls, const Capabilities& ours,
                          const nlohmann::json& offer, int timeout_ms = 5000);

// Destination side: accepts connections on ip:port in its own thread and
// serves each in a thread of its own (at most max_connections at once;
// more are closed at once and counted), each within `timeout_ms` for its
// steps. Each authenticated offer is passed to `on_offer` (one at a time),
// whose return value (or the PeerError it throws) is the reply. Without
// credentials every connection gets an error naming that.
class PeerServer {
 public:
  using OfferHandler = std::function<nlohmann::json(const nlohmann::json& offer, const Bytes& session_key)>;
  PeerServer(const std::string& listen, const PeerCredentials& creds, Capabilities ours, OfferHandler handler,
             int timeout_ms = 5000, unsigned max_connections = 32);
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  uint64_t auth_failures() const { return auth_failures_; }  // TLS handshakes refused (wrong PSK, certificate)
  uint64_t timeouts() const { return timeouts_; }            // connections cut at their deadline
  uint64_t busy_refusals() const { return busy_; }           // closed at once: max_connections in progress
  // Connections that did not end in an accepted session, whatever the
  // reason (auth failures and timeouts included).
  uint64_t handshake_failures() const { return handshake_failures_; }
  uint64_t sessions_accepted() const { return accepted_; }
  uint64_t handshakes_done() const { return handshakes_; }   // TLS handshakes completed

 private:
  void serve(int fd);

  int fd_ = -1;
  std::string mode_;  // the banner's "auth": psk, x509 or none
  std::unique_ptr<TlsContext> tls_;
  Capabilities ours_;
  OfferHandler handler_;
  int timeout_ms_;
  unsigned max_connections_;
  std::mutex handler_mu_;  // offers are handled one at a time
  std::mutex mu_;
  std::condition_variable idle_;
  unsigned active_ = 0;  // connections being served
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> auth_failures_{0}, timeouts_{0}, busy_{0}, accepted_{0}, handshakes_{0}, handshake_failures_{0};
  std::thread thread_;
};

}  // namespace mm::control
