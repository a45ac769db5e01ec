#include "dataplane/store/Arena.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mm::store {

bool Budget::take(uint64_t n) {
  uint64_t u = used_.load(std::memory_order_relaxed);
  do {
    if (u + n > limit_) return false;
  } while (!used_.compare_exchange_weak(u, u + n, std::memory_order_relaxed));
  return true;
}

std::string_view to_string(Backing b) { return b == Backing::file ? "file" : "memory"; }

Arena::Arena(Budget& budget, Backing backing, std::string file)
    : budget_(budget), backing_(backing), file_(std::move(file)) {
  // The chunk table never grows past what the budget allows: no
  // allocation when a chunk opens mid-migration.
  chunks_.reserve(size_t(budget.limit() / kChunkBytes) + 1);
  if (backing_ == Backing::file) {
    if (file_.empty()) throw std::invalid_argument("store: a file-backed arena needs a file name");
    fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      throw std::runtime_error("store: cannot create " + file_ + ": " + std::strerror(errno));
    }
  }
}

Arena::~Arena() {
  for (uint8_t* c : chunks_) ::munmap(c, kChunkBytes);
  budget_.give(bytes_held());
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(file_.c_str());
  }
}

bool Arena::open_chunk() {
  if (chunks_.size() == chunks_.capacity()) {
    error_ = "store budget exhausted";
    return false;
  }
  if (!budget_.take(kChunkBytes)) {
    error_ = "store budget exhausted";
    return false;
  }
  void* p = MAP_FAILED;
  if (backing_ == Backing::memory) {
    p = ::mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    // Advice only: without transparent huge pages the chunk is on 4 KiB pages.
    if (p != MAP_FAILED) (void)::madvise(p, kChunkBytes, MADV_HUGEPAGE);
  } else {
    const off_t off = off_t(chunks_.size()) * off_t(kChunkBytes);
    if (::ftruncate(fd_, off + off_t(kChunkBytes)) == 0) {
      p = ::mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, off);
    }
  }
  if (p == MAP_FAILED) {
    error_ = std::string("store: cannot map a chunk: ") + std::strerror(errno);
    budget_.give(kChunkBytes);
    return false;
  }
  chunks_.push_back(static_cast<uint8_t*>(p));
  used_in_chunk_ = 0;
  return true;
}

uint8_t* Arena::reserve(size_t n, Loc& at) {
  if (n > kChunkBytes) {
    error_ = "store: append larger than a chunk";
    return nullptr;
  }
  if (kChunkBytes - used_in_chunk_ < n && !open_chunk()) return nullptr;
  at.chunk = uint32_t(chunks_.size() - 1);
  at.offset = uint32_t(used_in_chunk_);
  return chunks_.back() + used_in_chunk_;
}

bool Arena::append(std::span<const uint8_t> bytes, Loc& at) {
  uint8_t* p = reserve(bytes.size(), at);
  if (!p) return false;
  std::memcpy(p, bytes.data(), bytes.size());
  commit(bytes.size());
  return true;
}

}  // namespace mm::store
