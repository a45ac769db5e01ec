#include "control/PeerChannel.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

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

std::string proof(const Bytes& key, const char* role, const std::string& cn, const std::string& sn) {
  return to_hex(hmac_sha256(key, std::string("mm-") + role + "|" + cn + "|" + sn));
}

Bytes session_key(const Bytes& key, const std::string& cn, const std::string& sn, uint64_t id) {
  return hmac_sha256(key, "mm-session|" + cn + "|" + sn + "|" + std::to_string(id));
}

void raise_if_error(const json& m) {
  if (m.value("type", "") == "error") {
    throw PeerError(m.value("class", "PeerError"), "the destination refused: " + m.value("error", std::string("?")));
  }
}

}  // namespace

OfferResult offer_session(const std::string& peer, const Bytes& key, const Capabilities& ours,
                          const json& offer, int timeout_ms) {
  std::unique_ptr<JsonLines> io;
  try {
    io = std::make_unique<JsonLines>(JsonLines::connect_tcp(peer, timeout_ms), timeout_ms);
  } catch (const std::exception& e) {
    throw PeerError("PeerError", std::string("peer channel: ") + e.what());
  }
  try {
    const std::string cn = to_hex(random_bytes(16));
    io->write({{"type", "hello"}, {"nonce", cn}, {"caps", ours.to_json()}});
    const json hello = io->read();
    raise_if_error(hello);
    const std::string sn = hello.value("nonce", "");
    // The destination proves it holds the key before we prove anything.
    if (sn.size() != 32 || !equal_secret(hello.value("proof", ""), proof(key, "server", cn, sn))) {
      throw PeerError("AuthError", "peer authentication failed: the destination " + peer +
                                       " does not hold our pre-shared key");
    }
    check_compatible(ours, hello.value("caps", json::object()), true);
    io->write({{"type", "auth"}, {"proof", proof(key, "client", cn, sn)}});
    raise_if_error(io->read());
    json msg = offer;
    msg["type"] = "session-offer";
    io->write(msg);
    json accept = io->read();
    raise_if_error(accept);
    if (accept.value("type", "") != "session-accept") {
      throw PeerError("PeerError", "unexpected answer to the offer: " + accept.dump().substr(0, 200));
    }
    return {accept, session_key(key, cn, sn, offer.value("session", 0ull))};
  } catch (const PeerError&) {
    throw;
  } catch (const std::exception& e) {
    throw PeerError("PeerError", std::string("peer channel with ") + peer + ": " + e.what());
  }
}

PeerServer::PeerServer(const std::string& listen, const Bytes& key, Capabilities ours,
                       OfferHandler handler)
    : key_(key), ours_(std::move(ours)), handler_(std::move(handler)) {
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
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0) {
    const int e = errno;
    ::close(fd_);
    throw std::runtime_error("cannot listen for peers on " + listen + ": " + strerror(e));
  }
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) serve(c);  // one at a time: offers are rare and short
    }
  });
}

PeerServer::~PeerServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

void PeerServer::serve(int fd) {
  JsonLines io(fd, 5000);
  try {
    const json hello = io.read();
    if (hello.value("type", "") != "hello") throw PeerError("PeerError", "expected hello");
    if (key_.empty()) {
      throw PeerError("AuthError", "the destination has no pre-shared key (--key-file), so it refuses peer sessions");
    }
    check_compatible(ours_, hello.value("caps", json::object()), false);
    const std::string cn = hello.value("nonce", "");
    if (cn.size() != 32) throw PeerError("PeerError", "hello without a 16-byte nonce");
    const std::string sn = to_hex(random_bytes(16));
    io.write({{"type", "hello"}, {"nonce", sn}, {"proof", proof(key_, "server", cn, sn)},
              {"caps", ours_.to_json()}});
    const json auth = io.read();
    if (!equal_secret(auth.value("proof", ""), proof(key_, "client", cn, sn))) {
      ++auth_failures_;
      throw PeerError("AuthError", "peer authentication failed: the source does not hold our pre-shared key");
    }
    io.write({{"type", "welcome"}});
    const json offer = io.read();
    if (offer.value("type", "") != "session-offer" || !offer.contains("session")) {
      throw PeerError("PeerError", "expected a session offer");
    }
    json reply = handler_(offer, session_key(key_, cn, sn, offer.value("session", 0ull)));
    reply["type"] = "session-accept";
    io.write(reply);
    ++accepted_;
  } catch (const PeerError& e) {
    ++handshake_failures_;
    try {
      io.write({{"type", "error"}, {"class", e.error_class()}, {"error", e.what()}});
    } catch (...) {
    }
  } catch (const std::exception& e) {
    ++handshake_failures_;
    try {
      io.write({{"type", "error"}, {"class", "PeerError"}, {"error", e.what()}});
    } catch (...) {
    }
  }
}

}  // namespace mm::control
