// A VM's memory image as a page store keeps it (README.md): for every
// guest page its XXH3-128 hash and its bytes as they crossed the wire
// (LZ4, zstd, DEFLATE or raw; zero pages and repeats by hash need none).
//
// It is built in two steps, so that no per-guest-page state is shared by
// the flows of a migration. During the migration each flow logs what it
// writes into a Capture of its own (hot path: one entry per page, its
// bytes appended to the capture's arena, no allocation). After the
// migration completed, Image::merge takes the captures on the cold path
// and keeps, for every page, the write of the highest epoch (QEMU writes a
// page at most once per epoch, dataplane/wire/MMP.md "Unchanged filter").
// From then on the image is read-only: flows of later sessions may read it
// from any worker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
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
Content content_of(pages::CodecKind k);

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

struct ImageInfo {
  std::string vm;
  uint64_t generation = 0;   // random, new for every image
  uint64_t pages = 0;        // guest pages its page tables cover (to the highest page written)
  uint64_t pages_held = 0;   // ... of them with their bytes
  uint64_t bytes = 0;        // budget it holds
  uint64_t made_unix_ms = 0;
};

class Image {
 public:
  struct Page {
    pages::PageHash hash;
    Loc at;
    uint16_t len = 0;
    uint8_t capture = 0;
    Content content = Content::none;  // never ref: resolved by merge
  };
  struct Block {
    std::string name;
    std::vector<Page> pages;  // by page index (offset / 4096)
  };

  // The image of a completed migration from its flows' captures (at most
  // 255). nullptr with the reason when none can be made (a broken capture,
  // or the page tables do not fit the budget).
  static std::shared_ptr<Image> merge(std::string vm, std::vector<std::unique_ptr<Capture>> captures,
                                      Budget& budget, std::string& why);
  ~Image();

  const ImageInfo& info() const { return info_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  const Block* block(std::string_view name) const;

  using CodecFor = std::function<pages::PageCodec*(pages::CodecKind)>;
  // The page's 4096 bytes into out, decoded and checked against the hash
  // it was kept with. Empty, or why not (not held, no codec, a mismatch).
  std::string read(const Page& p, uint8_t* out, const CodecFor& codecs) const;

 private:
  Image() = default;
  ImageInfo info_;
  std::vector<Block> blocks_;
  std::vector<std::unique_ptr<Capture>> captures_;  // their byte arenas
  Budget* budget_ = nullptr;
  uint64_t table_bytes_ = 0;  // the page tables' share of the budget
};

}  // namespace mm::store
