// Blocking JSON-lines I/O over a socket with a deadline on every read: the
// framing of the peer channel and of QMP, both on the cold path.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mm::control {

// Writes one JSON object and a newline, waiting up to timeout_ms whenever
// the socket is full. False on error or timeout (errno says which).
bool send_json_line(int fd, const nlohmann::json& j, int timeout_ms);

// Takes the first complete line out of `buf` into `out`; false when there
// is none yet. Throws std::runtime_error when the line is not JSON or
// `buf` holds more than max_line bytes without a newline.
bool take_json_line(std::string& buf, nlohmann::json& out, size_t max_line);
// One line from the other side as JSON. Throws std::runtime_error
// ("malformed JSON from the other side: ...") for anything nlohmann refuses,
// number overflow ("1e400") included (fuzz/fuzz_peer_message.cpp).
nlohmann::json parse_json_line(std::string_view line);

class JsonLines {
 public:
  // Takes ownership of fd.
  explicit JsonLines(int fd, int timeout_ms = 5000) : fd_(fd), timeout_ms_(timeout_ms) {}
  ~JsonLines();
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;

  // Throws std::runtime_error on timeout, EOF, malformed JSON or a line over 1 MiB.
  nlohmann::json read();
  void write(const nlohmann::json& j);
  int fd() const { return fd_; }

  // Connects to "unix:/path" or "host:port" (TCP) within timeout_ms.
  static int connect_unix(const std::string& path, int timeout_ms);
  static int connect_tcp(const std::string& host_port, int timeout_ms);

 private:
  int fd_;
  int timeout_ms_;
  std::string buf_;
};

}  // namespace mm::control
