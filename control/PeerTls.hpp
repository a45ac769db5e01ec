// TLS 1.3 under the peer channel (OpenSSL): either the pre-shared key as a
// TLS 1.3 external PSK (RFC 8446 2.2, with an (EC)DHE exchange for forward
// secrecy), or X.509 certificates in the layout QEMU and libvirt use for
// migration TLS (a directory with ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem). Both sides must prove
// themselves: the PSK binder, or a certificate the CA signed. TlsLines is
// one connection: the handshake and JSON lines, every step before a
// deadline. Cold path; exceptions.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "control/Psk.hpp"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace mm::control {

// How the peer channel authenticates. x509_dir set: certificates; else the
// pre-shared key (32 bytes or more, control/Psk.hpp load_key_file).
struct PeerCredentials {
  Bytes psk;
  std::string x509_dir;
  bool empty() const { return psk.empty() && x509_dir.empty(); }
  std::string describe() const { return x509_dir.empty() ? "pre-shared key" : "X.509 in " + x509_dir; }
};

class TlsContext {
 public:
  // Throws std::runtime_error naming the file or setting OpenSSL refused.
  TlsContext(const PeerCredentials& creds, bool server);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }
  const Bytes& psk() const { return psk_; }  // the TLS PSK (derived), empty with certificates

 private:
  SSL_CTX* ctx_ = nullptr;
  Bytes psk_;
};

// Raised when the other side did not prove itself (wrong PSK, a
// certificate the CA did not sign, none at all): the TLS handshake failed.
class TlsAuthError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A step (handshake, read, write) did not finish before its deadline.
class TlsTimeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class TlsLines {
 public:
  using Clock = std::chrono::steady_clock;
  // Takes ownership of the connected socket fd and runs the handshake
  // before `deadline`. Throws TlsAuthError when the handshake fails,
  // TlsTimeout at the deadline, std::runtime_error on a broken connection.
  TlsLines(const TlsContext& ctx, int fd, bool server, Clock::time_point deadline);
  ~TlsLines();
  TlsLines(const TlsLines&) = delete;
  TlsLines& operator=(const TlsLines&) = delete;

  // Moves every later step's deadline.
  void set_deadline(Clock::time_point d) { deadline_ = d; }
  // Throws TlsTimeout, or std::runtime_error on EOF, malformed JSON or a
  // line over 64 KiB.
  nlohmann::json read();
  void write(const nlohmann::json& j);
  // RFC 8446 7.5 exporter: `n` bytes both ends derive alike for `label`
  // and `context`, bound to this handshake.
  Bytes export_key(const std::string& label, const std::string& context, size_t n);

 private:
  // Waits for the socket as the last SSL call asked; false at the deadline.
  bool wait(int ssl_error);
  int fd_;
  SSL* ssl_ = nullptr;
  Clock::time_point deadline_;
  std::string buf_;
};

}  // namespace mm::control
