// One flow's log of the pages it wrote in one migration, for the page
// store (README.md). Hot path: an entry per page into a budgeted arena, the
// page's bytes as they crossed the wire into another; no heap allocation
// past the first sight of a RAM block, no lock, no exception. Owned by the
// flow; Image::merge takes it once the migration completed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/Page.hpp"
#include "dataplane/store/Arena.hpp"

namespace mm::store {

// How a page's bytes are kept. none: the page is not held (its last write
// could not be kept); ref: same bytes as another page of the same hash.
enum class Content : uint8_t { none = 0, zero, ref, raw, lz4, zstd, deflate };

// The Content of a page record's body encoded by codec k.
inline Content content_of(pages::CodecKind k) {
  switch (k) {
    case pages::CodecKind::lz4: return Content::lz4;
    case pages::CodecKind::zstd: return Content::zstd;
    case pages::CodecKind::deflate: return Content::deflate;
    case pages::CodecKind::raw: break;
  }
  return Content::raw;
}

class Capture {
 public:
  // Every page logged takes kEntryBytes of the budget, its bytes their length.
  Capture(Budget& budget, Backing backing, std::string file);
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // The index of a RAM block (a handful per VM; a new name allocates once).
  uint16_t block(std::string_view name);
  // A page written with bytes `body` encoded as `c` (zero and ref: none).
  // When the bytes do not fit the budget the page is logged as not held.
  void page(uint16_t block, uint64_t index, uint32_t epoch, const pages::PageHash& h, Content c,
            std::span<const uint8_t> body = {});
  // A write whose bytes this capture cannot keep: the page is not held,
  // unless a write of a later epoch is logged for it.
  void lost(uint16_t block, uint64_t index, uint32_t epoch) { page(block, index, epoch, {}, Content::none); }

  // The log itself ran out of budget: writes were missed, so no image can
  // be made from this capture.
  bool broken() const { return broken_; }
  uint64_t entries() const { return entries_n_; }
  uint64_t pages_without_bytes() const { return without_bytes_; }
  uint64_t bytes_held() const { return bytes_.bytes_held() + (log_ ? log_->bytes_held() : 0); }

 private:
  friend class Image;
  struct Entry {
    pages::PageHash hash;
    uint64_t index;
    Loc at;
    uint32_t epoch;
    uint16_t block;
    uint16_t len;
    Content content;
  };
  static constexpr size_t kEntryBytes = sizeof(Entry);
  static constexpr size_t kEntriesPerChunk = Arena::kChunkBytes / kEntryBytes;

  const Entry& entry(uint64_t i) const {
    return *reinterpret_cast<const Entry*>(
        log_->at({uint32_t(i / kEntriesPerChunk), uint32_t((i % kEntriesPerChunk) * kEntryBytes)}));
  }

  Arena bytes_;                // page bytes
  std::optional<Arena> log_;   // entries, kEntriesPerChunk per chunk; dropped once merged
  std::vector<std::string> blocks_;
  uint64_t entries_n_ = 0;
  uint64_t without_bytes_ = 0;
  bool broken_ = false;
};

// The captures of one session on their way from its parts (workers) to the
// control thread, which merges them into an image once every part handed
// its in. Cold path only: a capture is made when a flow starts and handed
// in when its part ends; the mutex is never taken per packet.
class CaptureBin {
 public:
  // files: a path prefix for file-backed captures (empty: memory).
  CaptureBin(Budget& budget, Backing backing, std::string files, std::string vm)
      : budget_(budget), backing_(backing), files_(std::move(files)), vm_(std::move(vm)) {}
  const std::string& vm() const { return vm_; }
  // Any thread. Throws std::runtime_error when a file cannot be made.
  std::unique_ptr<Capture> make();
  // The number of parts that will hand in (set before the parts start).
  void expect(uint32_t parts) { expected_.store(parts); }
  // One call per part when it ends: its captures, and whether the part
  // can vouch for them (its session completed; the home part also says
  // whether every write of the migration was seen: `why` is empty then).
  void hand_in(std::vector<std::unique_ptr<Capture>> caps, bool home, std::string why);
  // Every part handed in.
  bool complete() const;
  // The captures, and why no image may be made of them (empty: it may).
  std::vector<std::unique_ptr<Capture>> take(std::string& why);

 private:
  Budget& budget_;
  Backing backing_;
  std::string files_;
  std::string vm_;
  std::atomic<uint32_t> expected_{1};
  std::atomic<uint32_t> next_file_{0};
  mutable std::mutex mutex_;
  uint32_t handed_ = 0;
  bool home_seen_ = false;
  std::string why_;
  std::vector<std::unique_ptr<Capture>> caps_;
};

}  // namespace mm::store
