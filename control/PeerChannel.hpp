// The peer channel between daemons (docs/ARCHITECTURE.md §9): TCP, one JSON
// object per line. A source daemon connects, both prove knowledge of the
// pre-shared key (HMAC-SHA256 challenge-response, each side checks the
// other), compare versions and capabilities, and the source offers a
// session that the destination accepts or refuses. Both sides then derive
// the session key that tags every MMP packet of the session.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/Psk.hpp"

namespace mm::control {

// Version of this handshake; MMP's own version travels beside it.
inline constexpr int kPeerProtocol = 1;

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

// Source side: connect, authenticate both ways, offer `offer`. Throws
// PeerError (classes PeerError, AuthError, VersionMismatch).
OfferResult offer_session(const std::string& peer, const Bytes& key, const Capabilities& ours,
                          const nlohmann::json& offer, int timeout_ms = 5000);

// Destination side: accepts connections on ip:port in its own thread; each
// authenticated offer is passed to `on_offer`, whose return value (or the
// PeerError it throws) is the reply.
class PeerServer {
 public:
  using OfferHandler = std::function<nlohmann::json(const nlohmann::json& offer, const Bytes& session_key)>;
  PeerServer(const std::string& listen, const Bytes& key, Capabilities ours, OfferHandler handler);
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  uint64_t auth_failures() const { return auth_failures_; }
  // Connections that did not end in an accepted session, whatever the
  // reason (auth failures included).
  uint64_t handshake_failures() const { return handshake_failures_; }
  uint64_t sessions_accepted() const { return accepted_; }

 private:
  void serve(int fd);

  int fd_ = -1;
  Bytes key_;
  Capabilities ours_;
  OfferHandler handler_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> auth_failures_{0}, handshake_failures_{0}, accepted_{0};
  std::thread thread_;
};

}  // namespace mm::control
