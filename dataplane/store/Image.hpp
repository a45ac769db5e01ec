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
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/Page.hpp"
#include "dataplane/store/Capture.hpp"

namespace mm::store {

struct ImageInfo {
  std::string vm;
  uint64_t generation = 0;   // random, new for every image
  uint64_t pages = 0;        // guest pages its page tables cover (to the highest page written)
  uint64_t pages_held = 0;   // ... of them with their bytes
  uint64_t bytes = 0;        // budget it holds
  uint64_t carried = 0;      // pages whose bytes came from this host's earlier image of the VM
  uint64_t made_unix_ms = 0;
};

class Image {
 public:
  struct Page {
    pages::PageHash hash;
    Loc at;
    uint16_t len = 0;
    uint8_t arena = 0;                // where the bytes are (a capture's, or the inflated one)
    Content content = Content::none;  // never ref: resolved by merge
  };
  struct Block {
    std::string name;
    std::vector<Page> pages;  // by page index (offset / 4096)
  };

  // The image of a completed migration from its flows' captures (at most
  // 254). nullptr with the reason when none can be made (a broken capture,
  // or the page tables do not fit the budget). prior: this host's earlier
  // image of the same VM, or nullptr: a page logged as a repeat (ref) of a
  // hash no capture holds bytes of -- a PAGE_STORED page, whose bytes never
  // crossed the wire -- takes its bytes from prior's same page if that page
  // has that very hash (they are copied: the prior image is not kept).
  static std::shared_ptr<Image> merge(std::string vm, std::vector<std::unique_ptr<Capture>> captures,
                                      Budget& budget, std::string& why, const Image* prior = nullptr);
  // Pages whose bytes merge took from the prior image.
  uint64_t carried() const { return info_.carried; }
  ~Image();

  const ImageInfo& info() const { return info_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  const Block* block(std::string_view name) const;

  using CodecFor = std::function<pages::PageCodec*(pages::CodecKind)>;
  // The page's 4096 bytes into out, decoded and checked against the hash
  // it was kept with. Empty, or why not (not held, no codec, a mismatch).
  std::string read(const Page& p, uint8_t* out, const CodecFor& codecs) const;
  // A raw page's bytes where they lie (nullptr for any other content);
  // the caller checks them against p.hash before it uses them.
  const uint8_t* view(const Page& p) const {
    return p.content == Content::raw && p.len == pages::kPageSize ? arenas_[p.arena]->at(p.at) : nullptr;
  }
  // Before the image is shared: every LZ4/zstd page decoded (and checked)
  // into raw bytes, and raw pages moved next to them, as far as the budget
  // allows, so that a destination fills a stored page with a hash check
  // and no decompression. Captures no page refers to any more are freed.
  // Returns the pages it inflated.
  uint64_t inflate(const CodecFor& codecs, Budget& budget);

 private:
  Image() = default;
  ImageInfo info_;
  std::vector<Block> blocks_;
  std::vector<std::unique_ptr<Capture>> captures_;  // their byte arenas
  std::unique_ptr<Arena> inflated_;                  // raw pages (inflate)
  std::unique_ptr<Arena> carried_;                   // bytes copied from the prior image (merge)
  std::vector<const Arena*> arenas_;                 // by Page::arena
  Budget* budget_ = nullptr;
  uint64_t table_bytes_ = 0;  // the page tables' share of the budget
};

}  // namespace mm::store
