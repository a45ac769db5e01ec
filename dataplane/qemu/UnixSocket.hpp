// Non-blocking unix stream sockets between QEMU and the daemon: a listener
// QEMU migrates to, an outgoing connect to QEMU's -incoming socket, and a
// byte channel with a bounded output buffer (so a slow QEMU pushes back on
// the transport instead of growing memory).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace mm::qemu {

// "unix:/path" -> "/path"; throws std::invalid_argument with a clear message
// for other schemes or bad paths.
std::string unix_path_from_uri(const std::string& uri);

class UnixListener {
 public:
  UnixListener() = default;
  // Binds and listens at path (a stale socket file is replaced). Throws
  // std::runtime_error naming the path and errno text.
  explicit UnixListener(const std::string& path);
  ~UnixListener();
  UnixListener(UnixListener&& o) noexcept;
  UnixListener& operator=(UnixListener&& o) noexcept;
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // A non-blocking accepted fd, or -1 when nobody is waiting.
  int accept_one();
  bool open() const { return fd_ >= 0; }
  void close();
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Connects to path without blocking; returns the fd or -errno.
int connect_unix(const std::string& path);

class ByteChannel {
 public:
  ByteChannel(int fd, size_t out_capacity);
  ~ByteChannel();
  ByteChannel(const ByteChannel&) = delete;
  ByteChannel& operator=(const ByteChannel&) = delete;

  enum : ssize_t { kAgain = 0, kEof = -1, kError = -2 };
  // Scatter-read into the given buffers: bytes read, kAgain, kEof or kError.
  ssize_t read_into(std::span<const std::span<uint8_t>> bufs);

  // Writes data now if possible and buffers the rest; all or nothing: false
  // (nothing taken) when the buffer lacks room. Call flush() to progress.
  bool send(std::span<const uint8_t> data);
  // The same for data in parts (one writev when nothing is queued): only
  // what the socket does not take is copied into the buffer.
  bool send(std::span<const std::span<const uint8_t>> parts);
  size_t out_room() const { return out_cap_ - out_len_; }
  size_t out_capacity() const { return out_cap_; }
  bool out_empty() const { return out_len_ == 0; }
  // Writes buffered bytes; false on a socket error (errno_text() says which).
  bool flush();
  void shutdown_write();
  void close();
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& error_text() const { return error_; }

  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // Bytes taken by send(): written or still buffered.
  uint64_t bytes_taken() const { return bytes_out_ + out_len_; }

 private:
  ssize_t write_some(const uint8_t* p, size_t n);
  // Copies data to the ring's tail (the caller checked the room).
  void queue(const uint8_t* p, size_t n);
  void record_error(const char* what);

  int fd_;
  // Ring buffer; not zeroed, so its memory is committed only as it is used.
  std::unique_ptr<uint8_t[]> out_;
  size_t out_cap_;
  size_t out_head_ = 0, out_len_ = 0;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
  std::string error_;
};

}  // namespace mm::qemu
