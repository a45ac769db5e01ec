// The page table of a VM image (README.md): for each RAM block, the low 64
// bits of every held page's XXH3-128 (0: not held). A destination that holds
// an image of the VM sends it to the source over the fabric as STORE_TABLE
// records (dataplane/wire/MMP.md "Warm re-migration"), so the source can send
// a page whose hash matches as PAGE_STORED, with no bytes.
//
// Wire form of one STORE_TABLE body (big-endian): generation:8 flags:1
// (bit 0: the last chunk of the table) namelen:1 name first:8 count:4
// total:8, then the zstd frame of count little-endian 8-byte hashes (pages
// first .. first + count - 1 of a block of `total` pages). Chunks of one
// block come in order; at most kChunkPages pages each.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/store/Image.hpp"

namespace mm::store {

class PageTable {
 public:
  static constexpr uint32_t kChunkPages = 65536;
  // A table of more pages than this over all its blocks (256 GiB of guest
  // memory; 512 MiB of table) is refused, and a block's hashes are held
  // only as its chunks arrive: a lying peer cannot make the source
  // allocate more than the chunks it actually sent.
  static constexpr uint64_t kMaxBlockPages = uint64_t(1) << 26;
  static constexpr uint64_t kMaxTablePages = uint64_t(1) << 26;
  static constexpr size_t kMaxBlocks = 64;

  struct Block {
    std::string name;
    std::vector<uint64_t> hash;  // by page index; 0: not held (grows as chunks arrive)
    uint64_t total = 0;          // the block's pages (hash.size() once complete)
  };

  PageTable() = default;
  // The table of an image: its held pages' hashes.
  static PageTable of(const Image& img);
  // The STORE_TABLE bodies that carry it (the last one flagged).
  std::vector<std::vector<uint8_t>> encode() const;
  // Takes the next chunk. Returns "" or why the chunk is refused (the
  // session then fails: a destination that sends a malformed table).
  std::string add(std::span<const uint8_t> body);
  bool complete() const { return complete_; }

  uint64_t generation() const { return generation_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  // The block of that name, or nullptr (once per packet on the hot path).
  const Block* block(std::string_view name) const {
    for (const Block& b : blocks_) {
      if (b.name == name) return &b;
    }
    return nullptr;
  }
  uint64_t pages_held() const;

 private:
  uint64_t generation_ = 0;
  std::vector<Block> blocks_;
  bool complete_ = false;
  bool started_ = false;
  uint64_t next_ = 0;   // the next page expected in the last block
  uint64_t pages_ = 0;  // pages announced over all blocks
};

}  // namespace mm::store
