// Append-only byte storage for the page store (README.md): chunks of
// 2 MiB, each taken from the store's shared Budget when it is opened and
// given back when the arena goes. Backed by anonymous memory, or by a file
// of its own (mode 0600, removed with the arena) that grows a chunk at a
// time and is mapped. An append never straddles two chunks; it allocates
// nothing on the heap (the chunk table is reserved for the whole budget),
// so a flow can append per page on the hot path.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mm::store {

// Bytes a store may hold, shared by every arena of it: flows take chunks on
// their workers, images give them back from whichever thread drops them.
class Budget {
 public:
  explicit Budget(uint64_t limit) : limit_(limit) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;
  // Takes n bytes if they fit under the limit.
  bool take(uint64_t n);
  void give(uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }
  uint64_t free() const {
    const uint64_t u = used();
    return u >= limit_ ? 0 : limit_ - u;
  }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

enum class Backing : uint8_t { memory, file };
std::string_view to_string(Backing b);

// Where an append landed.
struct Loc {
  uint32_t chunk = 0;
  uint32_t offset = 0;
};

class Arena {
 public:
  static constexpr size_t kChunkBytes = size_t(2) << 20;
  // file: the arena's own file for Backing::file (created, must not exist).
  Arena(Budget& budget, Backing backing, std::string file = {});
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Appends bytes (at most kChunkBytes). False when the budget or the file
  // system refuses a new chunk (error() says which); nothing was written.
  bool append(std::span<const uint8_t> bytes, Loc& at);
  // Room for n bytes in the current chunk (opening a new one if needed);
  // the caller writes them and then calls commit(n).
  uint8_t* reserve(size_t n, Loc& at);
  void commit(size_t n) { used_in_chunk_ += n; }
  const uint8_t* at(Loc l) const { return chunks_[l.chunk] + l.offset; }
  uint8_t* at(Loc l) { return chunks_[l.chunk] + l.offset; }
  size_t chunks() const { return chunks_.size(); }
  // Bytes taken from the budget (whole chunks).
  uint64_t bytes_held() const { return uint64_t(chunks_.size()) * kChunkBytes; }
  const std::string& error() const { return error_; }
  Backing backing() const { return backing_; }
  const std::string& file() const { return file_; }

 private:
  bool open_chunk();

  Budget& budget_;
  Backing backing_;
  std::string file_;
  int fd_ = -1;
  std::vector<uint8_t*> chunks_;
  size_t used_in_chunk_ = kChunkBytes;  // no chunk open yet
  std::string error_;
};

}  // namespace mm::store
