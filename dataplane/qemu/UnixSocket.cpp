#include "dataplane/qemu/UnixSocket.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace mm::qemu {

namespace {
sockaddr_un make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) {
    throw std::invalid_argument("unix socket path too long (max " +
                                std::to_string(sizeof a.sun_path - 1) + " bytes): " + path);
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}
}  // namespace

std::string unix_path_from_uri(const std::string& uri) {
  constexpr std::string_view kScheme = "unix:";
  if (uri.rfind(kScheme, 0) != 0) {
    throw std::invalid_argument("unsupported migration URI '" + uri + "' (expected unix:/path)");
  }
  std::string path = uri.substr(kScheme.size());
  if (path.empty() || path[0] != '/') {
    throw std::invalid_argument("migration URI '" + uri + "' needs an absolute path");
  }
  make_addr(path);  // length check
  return path;
}

UnixListener::UnixListener(const std::string& path) : path_(path) {
  const sockaddr_un a = make_addr(path);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error("socket(): " + std::string(strerror(errno)));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot listen on " + path + ": " + strerror(e));
  }
}

UnixListener::~UnixListener() { close(); }

UnixListener::UnixListener(UnixListener&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) {
  o.fd_ = -1;
}

UnixListener& UnixListener::operator=(UnixListener&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

int UnixListener::accept_one() {
  if (fd_ < 0) return -1;
  return ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void UnixListener::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
    fd_ = -1;
  }
}

int connect_unix(const std::string& path) {
  const sockaddr_un a = make_addr(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(fd);
    return -e;
  }
  return fd;
}

ByteChannel::ByteChannel(int fd, size_t out_capacity)
    : fd_(fd),
      out_(out_capacity ? std::make_unique_for_overwrite<uint8_t[]>(out_capacity) : nullptr),
      out_cap_(out_capacity) {}

ByteChannel::~ByteChannel() { close(); }

void ByteChannel::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void ByteChannel::record_error(const char* what) {
  if (error_.empty()) error_ = std::string(what) + ": " + strerror(errno);
}

ssize_t ByteChannel::read_into(std::span<const std::span<uint8_t>> bufs) {
  if (fd_ < 0) return kError;
  iovec iov[64];
  const size_t n = std::min<size_t>(bufs.size(), 64);
  for (size_t i = 0; i < n; ++i) iov[i] = {bufs[i].data(), bufs[i].size()};
  const ssize_t r = ::readv(fd_, iov, int(n));
  if (r > 0) {
    bytes_in_ += uint64_t(r);
    return r;
  }
  if (r == 0) return kEof;
  if (errno == EAGAIN || errno == EINTR) return kAgain;
  // A peer that reset the connection has ended its stream like an EOF.
  if (errno == ECONNRESET) return kEof;
  record_error("read from QEMU");
  return kError;
}

ssize_t ByteChannel::write_some(const uint8_t* p, size_t n) {
  const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w >= 0) {
    bytes_out_ += uint64_t(w);
    return w;
  }
  if (errno == EAGAIN || errno == EINTR) return 0;
  record_error("write to QEMU");
  return -1;
}

void ByteChannel::queue(const uint8_t* p, size_t n) {
  size_t tail = (out_head_ + out_len_) % out_cap_;
  for (size_t i = 0; i < n;) {
    const size_t chunk = std::min(n - i, out_cap_ - tail);
    std::memcpy(out_.get() + tail, p + i, chunk);
    i += chunk;
    tail = (tail + chunk) % out_cap_;
  }
  out_len_ += n;
}

bool ByteChannel::send(std::span<const uint8_t> data) {
  const std::span<const uint8_t> one[1] = {data};
  return send(std::span<const std::span<const uint8_t>>(one));
}

bool ByteChannel::send(std::span<const std::span<const uint8_t>> parts) {
  if (fd_ < 0) return false;
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  // All or nothing: refused before the socket could take a part.
  if (total > out_room()) return false;
  size_t done = 0;
  if (out_len_ == 0) {
    // Fast path: nothing queued, hand the parts straight to the socket.
    constexpr size_t kIov = 64;
    iovec iov[kIov];
    size_t i = 0;
    while (i < parts.size()) {
      size_t n = 0, bytes = 0;
      for (; i + n < parts.size() && n < kIov; ++n) {
        iov[n] = {const_cast<uint8_t*>(parts[i + n].data()), parts[i + n].size()};
        bytes += parts[i + n].size();
      }
      if (bytes == 0) {
        i += n;
        continue;
      }
      msghdr mh{};
      mh.msg_iov = iov;
      mh.msg_iovlen = n;
      const ssize_t w = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        record_error("write to QEMU");
        return true;  // the error is recorded and flush() reports it
      }
      bytes_out_ += uint64_t(w);
      done += size_t(w);
      if (size_t(w) < bytes) break;
      i += n;
    }
    if (done == total) return true;
  }
  // What the socket did not take: the rest of the parts, into the ring.
  size_t skip = done;
  for (const auto& p : parts) {
    if (skip >= p.size()) {
      skip -= p.size();
      continue;
    }
    queue(p.data() + skip, p.size() - skip);
    skip = 0;
  }
  return true;
}

bool ByteChannel::flush() {
  while (out_len_ > 0 && fd_ >= 0) {
    const size_t chunk = std::min(out_len_, out_cap_ - out_head_);
    const ssize_t w = write_some(out_.get() + out_head_, chunk);
    if (w < 0) return false;
    if (w == 0) break;
    out_head_ = (out_head_ + size_t(w)) % out_cap_;
    out_len_ -= size_t(w);
  }
  return error_.empty();
}

void ByteChannel::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

}  // namespace mm::qemu
