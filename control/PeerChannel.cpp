#include "control/PeerChannel.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "control/JsonLines.hpp"

namespace mm::control {

using nlohmann::json;

json Capabilities::to_json() const {
  return {{"version", version}, {"mmp", mmp},     {"peer", kPeerProtocol}, {"mtu", mtu},
          {"queues", queues},   {"ip", ip},       {"mac", mac},            {"udp_port", udp_port},
          {"codecs", codecs}};
}

void check_compatible(const Capabilities& ours, const json& theirs, bool we_are_source) {
  const char* them = we_are_source ? "destination" : "source";
  // Always "source X, destination Y", whichever side notices.
  auto both = [&](const std::string& what, const std::string& ours_v, const std::string& theirs_v) {
    const std::string& src = we_are_source ? ours_v : theirs_v;
    const std::string& dst = we_are_source ? theirs_v : ours_v;
    return what + " mismatch: source " + src + ", destination " + dst;
  };
  if (!theirs.is_object() || !theirs.contains("mmp") || !theirs.contains("peer")) {
    throw PeerError("VersionMismatch", std::string("the ") + them + " sent no capabilities");
  }
  // What they sent for a member, as text ("none" when absent): a member
  // may be missing or of any type (fuzz/fuzz_peer_message.cpp).
  auto sent = [&](const char* k) {
    const auto it = theirs.find(k);
    return it == theirs.end() ? std::string("none") : it->dump();
  };
  if (theirs["peer"] != kPeerProtocol) {
    throw PeerError("VersionMismatch", both("peer protocol", std::to_string(kPeerProtocol), sent("peer")));
  }
  if (theirs["mmp"] != ours.mmp) {
    throw PeerError("VersionMismatch", both("MMP version", std::to_string(ours.mmp), sent("mmp")));
  }
  const auto mtu = theirs.find("mtu");
  if (mtu == theirs.end() || !mtu->is_number_unsigned() || mtu->get<uint64_t>() != ours.mtu) {
    throw PeerError("CapabilityMismatch", both("fabric MTU", std::to_string(ours.mtu), sent("mtu")));
  }
  bool codec = false;
  if (const auto codecs = theirs.find("codecs"); codecs != theirs.end() && codecs->is_array()) {
    for (const auto& c : *codecs) {
      for (const auto& o : ours.codecs) codec |= c == o;
    }
  }
  if (!codec) {
    throw PeerError("CapabilityMismatch", both("codecs", json(ours.codecs).dump(), sent("codecs")));
  }
}

namespace {

// RFC 8446 7.5 exporter label of the session key (context: the session id).
constexpr const char* kSessionKeyLabel = "EXPORTER-memmotion-session-key";

void raise_if_error(const json& m) {
  if (m.value("type", "") == "error") {
    throw PeerError(m.value("class", "PeerError"), "the destination refused: " + m.value("error", std::string("?")));
  }
}

// The destination's plain banner, before TLS: only for clear errors (what
// it says is checked by the TLS handshake that follows, never trusted).
json read_banner(int fd, int timeout_ms) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (line.size() < 512) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, int(left)) <= 0) throw std::runtime_error("no banner within " + std::to_string(timeout_ms) + " ms");
    char c;
    if (::recv(fd, &c, 1, 0) != 1) throw std::runtime_error("the destination closed the connection");
    if (c == '\n') {
      try {
        return json::parse(line);
      } catch (const json::parse_error&) {
        break;
      }
    }
    line += c;
  }
  throw std::runtime_error("the destination does not speak the peer protocol: " + line.substr(0, 80));
}

}  // namespace

OfferResult offer_session(const std::string& peer, const TlsContext& tls, const Capabilities& ours,
                          const json& offer, int timeout_ms) {
  int fd = -1;
  try {
    fd = JsonLines::connect_tcp(peer, timeout_ms);
  } catch (const std::exception& e) {
    throw PeerError("PeerError", std::string("peer channel: ") + e.what());
  }
  std::unique_ptr<TlsLines> io;
  std::function<PeerError(const TlsAuthError&)> auth_failed;
  try {
    json banner;
    try {
      banner = read_banner(fd, timeout_ms);
    } catch (...) {
      ::close(fd);
      throw;
    }
    raise_if_error(banner);
    if (banner.value("peer", 0) != kPeerProtocol) {
      ::close(fd);
      throw PeerError("VersionMismatch", "peer protocol mismatch: source " + std::to_string(kPeerProtocol) +
                                             ", destination " + banner.value("peer", json(nullptr)).dump());
    }
    const std::string mode = banner.value("auth", "");
    const std::string ours_mode = tls.psk().empty() ? "x509" : "psk";
    if (mode != ours_mode) {
      ::close(fd);
      throw PeerError("AuthError", "peer authentication mismatch: the source uses " + ours_mode +
                                       ", the destination " + peer + " " + mode);
    }
    // Called from the catch below, where this block's locals are gone:
    // mode by value.
    auth_failed = [&peer, mode](const TlsAuthError& e) {
      return PeerError("AuthError", "peer authentication failed: the destination " + peer +
                                        (mode == "psk" ? " does not hold our pre-shared key"
                                                       : " and we do not trust each other's certificates") +
                                        " (" + e.what() + ")");
    };
    io = std::make_unique<TlsLines>(tls, fd, false, TlsLines::Clock::now() + std::chrono::milliseconds(timeout_ms));
    // Every step has timeout_ms (the destination's answer to the offer may
    // wait for its QEMU).
    const auto step = [&] { io->set_deadline(TlsLines::Clock::now() + std::chrono::milliseconds(timeout_ms)); };
    // The destination speaks first inside TLS: a certificate it refused
    // shows as an alert on this first read (TLS 1.3 ends the client's
    // handshake before the server checked it).
    const json hello = io->read();
    raise_if_error(hello);
    check_compatible(ours, hello.value("caps", json::object()), true);
    step();
    io->write({{"type", "hello"}, {"caps", ours.to_json()}});
    json msg = offer;
    msg["type"] = "session-offer";
    step();
    io->write(msg);
    step();
    json accept = io->read();
    raise_if_error(accept);
    if (accept.value("type", "") != "session-accept") {
      throw PeerError("PeerError", "unexpected answer to the offer: " + accept.dump().substr(0, 200));
    }
    return {accept, io->export_key(kSessionKeyLabel, std::to_string(offer.value("session", 0ull)), 32)};
  } catch (const PeerError&) {
    throw;
  } catch (const TlsAuthError& e) {
    throw auth_failed(e);
  } catch (const std::exception& e) {
    throw PeerError("PeerError", std::string("peer channel with ") + peer + ": " + e.what());
  }
}

PeerServer::PeerServer(const std::string& listen, const PeerCredentials& creds, Capabilities ours,
                       OfferHandler handler, int timeout_ms, unsigned max_connections)
    : ours_(std::move(ours)), handler_(std::move(handler)), timeout_ms_(timeout_ms), max_connections_(max_connections) {
  if (!creds.empty()) tls_ = std::make_unique<TlsContext>(creds, true);
  mode_ = creds.empty() ? "none" : creds.x509_dir.empty() ? "psk" : "x509";
  const auto colon = listen.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (colon == std::string::npos || ::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    throw std::runtime_error("peer listen address '" + listen + "' is not IPv4:port");
  }
  a.sin_port = htons(uint16_t(std::atoi(listen.c_str() + colon + 1)));
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0) {
    const int e = errno;
    ::close(fd_);
    throw std::runtime_error("cannot listen for peers on " + listen + ": " + strerror(e));
  }
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (active_ >= max_connections_) {
          ++busy_;
          ::close(c);  // the others keep their turn; this one may try again
          continue;
        }
        ++active_;
      }
      // Each connection in its own thread, bounded by its own deadlines.
      std::thread([this, c] {
        serve(c);
        std::lock_guard<std::mutex> lock(mu_);
        --active_;
        idle_.notify_all();
      }).detach();
    }
  });
}

PeerServer::~PeerServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  // Connections still being served end at their deadlines.
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return active_ == 0; });
}

void PeerServer::serve(int fd) {
  const auto deadline = [this] { return TlsLines::Clock::now() + std::chrono::milliseconds(timeout_ms_); };
  json banner = {{"memmotion", "peer"}, {"peer", kPeerProtocol}, {"auth", mode_}};
  if (!tls_) {
    banner = {{"type", "error"}, {"class", "AuthError"},
              {"error", "the destination has no pre-shared key (--key-file) or certificates (--x509-dir), so it "
                        "refuses peer sessions"}};
  }
  if (!send_json_line(fd, banner, timeout_ms_) || !tls_) {
    ::close(fd);
    return;
  }
  std::unique_ptr<TlsLines> io;
  try {
    io = std::make_unique<TlsLines>(*tls_, fd, true, deadline());
    ++handshakes_;
    io->write({{"type", "hello"}, {"caps", ours_.to_json()}});
    const json hello = io->read();
    if (hello.value("type", "") != "hello") throw PeerError("PeerError", "expected hello");
    check_compatible(ours_, hello.value("caps", json::object()), false);
    const json offer = io->read();
    if (offer.value("type", "") != "session-offer" || !offer.contains("session")) {
      throw PeerError("PeerError", "expected a session offer");
    }
    const Bytes key = io->export_key(kSessionKeyLabel, std::to_string(offer.value("session", 0ull)), 32);
    json reply;
    {
      std::lock_guard<std::mutex> lock(handler_mu_);
      reply = handler_(offer, key);
    }
    reply["type"] = "session-accept";
    ++accepted_;
    io->set_deadline(deadline());
    io->write(reply);
  } catch (const TlsAuthError&) {
    ++auth_failures_;  // the TLS alert told the other side
    ++handshake_failures_;
  } catch (const TlsTimeout&) {
    ++timeouts_;
    ++handshake_failures_;
  } catch (const PeerError& e) {
    ++handshake_failures_;
    try {
      if (io) io->write({{"type", "error"}, {"class", e.error_class()}, {"error", e.what()}});
    } catch (...) {
    }
  } catch (const std::exception& e) {
    ++handshake_failures_;
    try {
      if (io) io->write({{"type", "error"}, {"class", "PeerError"}, {"error", e.what()}});
    } catch (...) {
    }
  }
}

}  // namespace mm::control
