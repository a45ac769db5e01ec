#include "control/PeerTls.hpp"

#include "control/JsonLines.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace mm::control {

namespace {

// TLS 1.3 only, one suite: AES-256-GCM with SHA-384 (the external PSK is
// 48 bytes, SHA-384's length).
constexpr const char* kSuite = "TLS_AES_256_GCM_SHA384";
constexpr unsigned char kSuiteId[2] = {0x13, 0x02};
constexpr size_t kPskSize = 48;
constexpr const char* kPskIdentity = "memmotion-peer-psk";
constexpr size_t kMaxLine = 64 << 10;

std::string ssl_error_text() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

const TlsContext* context_of(SSL* ssl) {
  return static_cast<const TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

// An SSL_SESSION that carries the external PSK (the library frees it).
SSL_SESSION* psk_session(SSL* ssl, const Bytes& psk) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kSuiteId);
  SSL_SESSION* s = cipher ? SSL_SESSION_new() : nullptr;
  if (!s) return nullptr;
  if (SSL_SESSION_set1_master_key(s, psk.data(), psk.size()) != 1 || SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  *sess = nullptr;
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kSuiteId);
  if (!cipher || (md && md != SSL_CIPHER_get_handshake_digest(cipher))) return 1;  // no PSK for that hash
  *sess = psk_session(ssl, context_of(ssl)->psk());
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity);
  *idlen = std::strlen(kPskIdentity);
  return *sess ? 1 : 0;
}

int find_psk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  *sess = nullptr;
  // Another identity: no PSK (the handshake then fails, there is no certificate).
  if (idlen != std::strlen(kPskIdentity) || std::memcmp(id, kPskIdentity, idlen) != 0) return 1;
  *sess = psk_session(ssl, context_of(ssl)->psk());
  return *sess ? 1 : 0;
}

std::string need_file(const std::string& dir, const char* name, bool secret) {
  const std::string path = dir + "/" + name;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("X.509 file " + path + " does not exist");
  if (secret && (st.st_mode & 077)) {
    throw std::runtime_error("private key " + path + " is accessible by group or others; chmod 600 it");
  }
  return path;
}

}  // namespace

TlsContext::TlsContext(const PeerCredentials& creds, bool server) {
  // The files are checked before there is a context to free (a throw from
  // a constructor runs no destructor).
  std::string ca, cert, key;
  if (!creds.x509_dir.empty()) {
    const std::string& d = creds.x509_dir;
    const std::string role = server ? "server" : "client";
    ca = need_file(d, "ca-cert.pem", false);
    cert = need_file(d, (role + "-cert.pem").c_str(), false);
    key = need_file(d, (role + "-key.pem").c_str(), true);
  }
  ctx_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx_) throw std::runtime_error("OpenSSL: no TLS context: " + ssl_error_text());
  auto fail = [&](const std::string& what) {
    const std::string why = what + ": " + ssl_error_text();
    SSL_CTX_free(ctx_);
    ctx_ = nullptr;
    throw std::runtime_error(why);
  };
  SSL_CTX_set_app_data(ctx_, this);
  if (SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx_, TLS1_3_VERSION) != 1 || SSL_CTX_set_ciphersuites(ctx_, kSuite) != 1) {
    fail("OpenSSL refused TLS 1.3 with " + std::string(kSuite));
  }
  // One exchange per connection: no tickets for later resumption.
  SSL_CTX_set_num_tickets(ctx_, 0);
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
  if (!creds.x509_dir.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx_, cert.c_str()) != 1) fail("certificate " + cert);
    if (SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) fail("private key " + key);
    if (SSL_CTX_check_private_key(ctx_) != 1) fail(key + " does not belong to " + cert);
    if (SSL_CTX_load_verify_locations(ctx_, ca.c_str(), nullptr) != 1) fail("CA certificate " + ca);
    // Both sides must show a certificate the CA signed (QEMU's verify-peer).
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
  } else if (!creds.psk.empty()) {
    // The key file's bytes are not the PSK itself: one derived for this use.
    psk_ = hkdf_sha256(creds.psk, "memmotion peer channel", "tls13 external psk", kPskSize);
    if (server) {
      SSL_CTX_set_psk_find_session_callback(ctx_, find_psk);
    } else {
      SSL_CTX_set_psk_use_session_callback(ctx_, use_psk);
    }
  } else {
    fail("the peer channel needs a pre-shared key or certificates");
  }
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsLines::TlsLines(const TlsContext& ctx, int fd, bool server, Clock::time_point deadline)
    : fd_(fd), deadline_(deadline) {
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  ssl_ = SSL_new(ctx.get());
  auto give_up = [&](auto error) {
    SSL_free(ssl_);
    ::close(fd_);
    throw error;
  };
  if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) give_up(std::runtime_error("OpenSSL: " + ssl_error_text()));
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) return;
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait(e)) give_up(TlsTimeout("the TLS handshake did not finish in time"));
      continue;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      give_up(std::runtime_error("the other side closed the connection during the TLS handshake"));
    }
    give_up(TlsAuthError("TLS 1.3 handshake failed: " + ssl_error_text()));
  }
}

TlsLines::~TlsLines() {
  SSL_shutdown(ssl_);  // one try: a close_notify if the socket takes it
  SSL_free(ssl_);
  ::close(fd_);
}

bool TlsLines::wait(int ssl_error) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
  if (left <= 0) return false;
  pollfd p{fd_, short(ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
  return ::poll(&p, 1, int(left)) > 0;
}

nlohmann::json TlsLines::read() {
  for (;;) {
    nlohmann::json j;
    if (take_json_line(buf_, j, kMaxLine)) return j;
    char tmp[16384];
    ERR_clear_error();
    const int n = SSL_read(ssl_, tmp, sizeof tmp);
    if (n > 0) {
      buf_.append(tmp, size_t(n));
      continue;
    }
    const int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait(e)) throw TlsTimeout("no answer in time");
      continue;
    }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
      throw std::runtime_error("the other side closed the connection");
    }
    // In TLS 1.3 a client's handshake ends before the server has checked
    // its certificate: a refusal arrives as an alert on the first read.
    throw TlsAuthError("the other side refused the TLS session: " + ssl_error_text());
  }
}

void TlsLines::write(const nlohmann::json& j) {
  const std::string s = j.dump() + "\n";
  for (;;) {
    ERR_clear_error();
    const int n = SSL_write(ssl_, s.data(), int(s.size()));
    if (n > 0) return;  // without partial writes: all of it
    const int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait(e)) throw TlsTimeout("cannot send in time");
      continue;
    }
    throw std::runtime_error("TLS: cannot send: " + ssl_error_text());
  }
}

Bytes TlsLines::export_key(const std::string& label, const std::string& context, size_t n) {
  Bytes out(n);
  if (SSL_export_keying_material(ssl_, out.data(), n, label.data(), label.size(),
                                 reinterpret_cast<const unsigned char*>(context.data()), context.size(), 1) != 1) {
    throw std::runtime_error("TLS exporter failed: " + ssl_error_text());
  }
  return out;
}

}  // namespace mm::control
