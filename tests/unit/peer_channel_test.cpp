// Proves the peer channel on TLS 1.3 (control/PeerChannel, control/PeerTls)
// over real TCP on the loopback: the pre-shared key as an external PSK and
// X.509 certificates in QEMU's layout both let an offer through with the
// same exported session key on both sides; a wrong PSK, an untrusted
// certificate, a mismatched mode and a destination without credentials are
// refused with a clear error and counted; many handshakes run at once; and
// stalled clients do not hold up others (each is cut at its own deadline).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "control/JsonLines.hpp"
#include "control/PeerChannel.hpp"

using namespace mm::control;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string free_address() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
}

Capabilities caps() {
  Capabilities c;
  c.version = "test";
  c.mmp = 3;
  c.mtu = 9000;
  return c;
}

Bytes key_of(char c) { return Bytes(40, uint8_t(c)); }

// Records what the destination's handler saw.
struct Handler {
  std::mutex mu;
  std::map<uint64_t, Bytes> keys;
  std::atomic<int> calls{0};
  PeerServer::OfferHandler fn() {
    return [this](const json& offer, const Bytes& key) {
      ++calls;
      std::lock_guard<std::mutex> lock(mu);
      keys[offer.value("session", 0ull)] = key;
      return json{{"session", offer.value("session", 0ull)}};
    };
  }
};

json offer(uint64_t id) { return {{"session", id}}; }

// CA, server and client certificates in QEMU's file names, made with the
// openssl tool; `rogue_client`: the client's certificate is signed by
// another CA (the server's and the CA file are the right ones).
std::string make_x509(const std::string& name, bool rogue_client) {
  const fs::path d = fs::temp_directory_path() / ("mm-peer-x509-" + std::to_string(::getpid()) + "-" + name);
  fs::create_directories(d);
  const std::string q = "cd " + d.string() + " && ";
  auto sh = [&](const std::string& cmd) {
    ASSERT_EQ(std::system((q + cmd + " >/dev/null 2>&1").c_str()), 0) << cmd << " (the openssl tool: scripts/packages.txt)";
  };
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  sh("openssl req -x509 " + ec + " -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=mm-test-ca");
  sh("openssl req -x509 " + ec + " -keyout rogue-key.pem -out rogue-cert.pem -days 2 -subj /CN=mm-rogue-ca");
  for (const char* role : {"server", "client"}) {
    const std::string r = role;
    const std::string ca = rogue_client && r == "client" ? "rogue" : "ca";
    sh("openssl req " + ec + " -keyout " + r + "-key.pem -out " + r + ".csr -subj /CN=mm-" + r);
    sh("openssl x509 -req -in " + r + ".csr -CA " + ca + "-cert.pem -CAkey " + ca + "-key.pem -CAcreateserial -out " +
       r + "-cert.pem -days 2");
  }
  sh("chmod 600 ca-key.pem rogue-key.pem server-key.pem client-key.pem");
  return d.string();
}

}  // namespace

TEST(PeerChannel, PskOfferGoesThroughWithTheSameSessionKeyOnBothSides) {
  Handler h;
  const std::string addr = free_address();
  PeerServer server(addr, {key_of('a'), ""}, caps(), h.fn());
  TlsContext client({key_of('a'), ""}, false);
  const OfferResult r = offer_session(addr, client, caps(), offer(7));
  EXPECT_EQ(r.accept.value("session", 0), 7);
  ASSERT_EQ(h.keys.count(7), 1u);
  EXPECT_EQ(h.keys[7], r.session_key);
  EXPECT_EQ(r.session_key.size(), 32u);
  // Another session (or another connection) exports another key.
  const OfferResult r2 = offer_session(addr, client, caps(), offer(8));
  EXPECT_NE(r2.session_key, r.session_key);
  EXPECT_EQ(server.handshakes_done(), 2u);
  EXPECT_EQ(server.sessions_accepted(), 2u);
  EXPECT_EQ(server.auth_failures(), 0u);
}

TEST(PeerChannel, WrongPskIsRefusedAndCounted) {
  Handler h;
  const std::string addr = free_address();
  PeerServer server(addr, {key_of('a'), ""}, caps(), h.fn());
  TlsContext wrong({key_of('b'), ""}, false);
  try {
    offer_session(addr, wrong, caps(), offer(7));
    FAIL() << "an offer with the wrong key went through";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.error_class(), "AuthError");
    EXPECT_NE(std::string(e.what()).find("does not hold our pre-shared key"), std::string::npos) << e.what();
  }
  for (int i = 0; i < 50 && server.auth_failures() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server.auth_failures(), 1u);
  EXPECT_EQ(h.calls, 0);
  EXPECT_EQ(server.sessions_accepted(), 0u);
}

TEST(PeerChannel, ManyHandshakesAtOnce) {
  Handler h;
  const std::string addr = free_address();
  PeerServer server(addr, {key_of('a'), ""}, caps(), h.fn());
  TlsContext client({key_of('a'), ""}, false);
  constexpr int kClients = 16;
  std::vector<std::thread> threads;
  std::vector<Bytes> got(kClients);
  std::atomic<int> failed{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      try {
        got[i] = offer_session(addr, client, caps(), offer(100 + i)).session_key;
      } catch (const std::exception& e) {
        ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(server.sessions_accepted(), uint64_t(kClients));
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(h.keys[100 + i], got[i]) << i;
}

TEST(PeerChannel, StalledClientsDoNotHoldUpOthersAndAreCutAtTheirDeadline) {
  Handler h;
  const std::string addr = free_address();
  PeerServer server(addr, {key_of('a'), ""}, caps(), h.fn(), /*timeout_ms=*/2500);
  // Eight clients that connect and then say nothing (no TLS ClientHello).
  std::vector<int> stalled;
  for (int i = 0; i < 8; ++i) stalled.push_back(JsonLines::connect_tcp(addr, 2000));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  TlsContext client({key_of('a'), ""}, false);
  const OfferResult r = offer_session(addr, client, caps(), offer(9));
  EXPECT_EQ(r.accept.value("session", 0), 9);
  // It went through while all eight were still being waited for.
  EXPECT_EQ(server.timeouts(), 0u);
  EXPECT_EQ(server.sessions_accepted(), 1u);
  for (int i = 0; i < 200 && server.timeouts() < 8; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(server.timeouts(), 8u);
  for (int fd : stalled) ::close(fd);
}

TEST(PeerChannel, X509CertificatesInQemusLayout) {
  Handler h;
  const std::string dir = make_x509("good", false);
  const std::string addr = free_address();
  PeerServer server(addr, {{}, dir}, caps(), h.fn());
  TlsContext client({{}, dir}, false);
  const OfferResult r = offer_session(addr, client, caps(), offer(11));
  EXPECT_EQ(h.keys[11], r.session_key);
  EXPECT_EQ(server.auth_failures(), 0u);
  fs::remove_all(dir);
}

TEST(PeerChannel, UntrustedCertificateIsRefusedAndCounted) {
  Handler h;
  const std::string rogue = make_x509("rogue", true);
  const std::string addr = free_address();
  PeerServer server(addr, {{}, rogue}, caps(), h.fn());
  TlsContext client({{}, rogue}, false);
  try {
    offer_session(addr, client, caps(), offer(12));
    FAIL() << "a client certificate of another CA was accepted";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.error_class(), "AuthError") << e.what();
  }
  for (int i = 0; i < 50 && server.auth_failures() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server.auth_failures(), 1u);
  EXPECT_EQ(h.calls, 0);
  fs::remove_all(rogue);
}

TEST(PeerChannel, MismatchedModeAndMissingCredentialsGetAClearError) {
  Handler h;
  const std::string dir = make_x509("mode", false);
  const std::string a1 = free_address();
  PeerServer x509(a1, {{}, dir}, caps(), h.fn());
  TlsContext psk({key_of('a'), ""}, false);
  try {
    offer_session(a1, psk, caps(), offer(13));
    FAIL() << "a PSK client got through to an X.509 server";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.error_class(), "AuthError");
    EXPECT_NE(std::string(e.what()).find("the source uses psk"), std::string::npos) << e.what();
  }
  const std::string a2 = free_address();
  PeerServer none(a2, {}, caps(), h.fn());
  try {
    offer_session(a2, psk, caps(), offer(14));
    FAIL() << "a destination without credentials accepted";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.error_class(), "AuthError");
    EXPECT_NE(std::string(e.what()).find("no pre-shared key"), std::string::npos) << e.what();
  }
  EXPECT_EQ(h.calls, 0);
  // A private key others may read is refused when the daemon starts.
  fs::permissions(dir + "/client-key.pem", fs::perms::owner_read | fs::perms::group_read);
  EXPECT_THROW(TlsContext({{}, dir}, false), std::runtime_error);
  fs::remove_all(dir);
}
