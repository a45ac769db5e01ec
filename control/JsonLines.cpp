#include "control/JsonLines.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace mm::control {

JsonLines::~JsonLines() {
  if (fd_ >= 0) ::close(fd_);
}

bool take_json_line(std::string& buf, nlohmann::json& out, size_t max_line) {
  const auto nl = buf.find('\n');
  if (nl == std::string::npos) {
    if (buf.size() > max_line) {
      throw std::runtime_error("a line of over " + std::to_string(max_line >> 10) + " KiB from the other side");
    }
    return false;
  }
  std::string line = buf.substr(0, nl);
  buf.erase(0, nl + 1);
  out = parse_json_line(line);
  return true;
}

nlohmann::json parse_json_line(std::string_view line) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception&) {  // parse_error, and out_of_range for 1e400
    throw std::runtime_error("malformed JSON from the other side: " + std::string(line.substr(0, 120)));
  }
}

nlohmann::json JsonLines::read() {
  for (;;) {
    nlohmann::json j;
    if (take_json_line(buf_, j, 1u << 20)) return j;
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms_);
    if (r == 0) throw std::runtime_error("no answer within " + std::to_string(timeout_ms_) + " ms");
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) throw std::runtime_error("the other side closed the connection");
    buf_.append(tmp, size_t(n));
  }
}

bool send_json_line(int fd, const nlohmann::json& j, int timeout_ms) {
  const std::string s = j.dump() + "\n";
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += size_t(w);
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) > 0) continue;
      errno = ETIMEDOUT;
    }
    return false;
  }
  return true;
}

void JsonLines::write(const nlohmann::json& j) {
  if (!send_json_line(fd_, j, timeout_ms_)) {
    throw std::runtime_error(std::string("cannot send: ") + strerror(errno));
  }
}

namespace {
int finish_connect(int fd, const sockaddr* a, socklen_t len, int timeout_ms, const std::string& what) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int rc = ::connect(fd, a, len);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    rc = ::poll(&p, 1, timeout_ms) > 0 ? 0 : -1;
    if (rc != 0) errno = ETIMEDOUT;
    int err = 0;
    socklen_t el = sizeof err;
    if (rc == 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err != 0) {
      errno = err;
      rc = -1;
    }
  }
  if (rc != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot connect to " + what + ": " + strerror(e));
  }
  ::fcntl(fd, F_SETFL, flags);
  return fd;
}
}  // namespace

int JsonLines::connect_unix(const std::string& path, int timeout_ms) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  return finish_connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a, timeout_ms, path);
}

int JsonLines::connect_tcp(const std::string& host_port, int timeout_ms) {
  const auto colon = host_port.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    throw std::runtime_error("'" + host_port + "' is not IPv4:port");
  }
  const int port = std::atoi(host_port.c_str() + colon + 1);
  if (port <= 0 || port > 65535) throw std::runtime_error("'" + host_port + "' has no valid port");
  a.sin_port = htons(uint16_t(port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return finish_connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a, timeout_ms, host_port);
}

}  // namespace mm::control
