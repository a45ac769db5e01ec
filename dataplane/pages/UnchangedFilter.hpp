// The unchanged-page filter: per RAM block, the hash of what was last sent
// for each page. QEMU re-sends every dirtied page, and many were rewritten
// with the same bytes; those need not cross the wire again (a PAGE_SAME
// record; the rebuilt multifd packet omits the page).
//
// Omitting a page is only right if the destination still holds the bytes
// last sent for it. QEMU 7.2 writes the same page by other paths too (ZERO
// records on the main channel), and its channels run concurrently; what
// orders them is the epoch: the number of multifd SYNC barriers before a
// packet on its channel, or of RAM EOS markers before a record on the main
// channel (QEMU sends a SYNC on every channel before each EOS). A page may
// go out twice in one epoch, on two channels: QEMU 7.2 now and then repeats
// the last page of a full multifd packet as the first page of the next
// (seen in the e2e traces; with the same bytes mostly, but not
// necessarily); two such sends with different bytes leave the page
// unskippable until it is sent again in a later epoch. So every entry keeps the epoch it was sent
// in and the latest epoch in which something else wrote the page, and a
// page may be skipped only in a later epoch than its last send, with no
// other write since. The caller must also make sure it has seen everything
// of the earlier epochs on all channels (Session's gate).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "dataplane/pages/Page.hpp"
#include "dataplane/pages/PageBlocks.hpp"

namespace mm::pages {

class UnchangedFilter {
 public:
  struct Entry {
    PageHash hash;
    uint32_t sent = 0;   // 1 + epoch of the last send; 0: never sent
    uint32_t other = 0;  // 1 + latest epoch of another write; 0: none
  };
  // Pages beyond this index are never tracked, so never skipped: the
  // destination checks no further (PageBlocks.hpp).
  static constexpr uint64_t kMaxPages = kMaxTrackedPages;
  using Block = PageBlocks<Entry>::Block;

  Block& block(std::string_view name) { return blocks_.block(name); }
  // True when the page was last sent with this very hash in an epoch before
  // `epoch` and nothing else wrote it since.
  static bool can_skip(const Block& b, uint64_t page_index, const PageHash& h, uint32_t epoch);
  // The page goes out with these bytes in `epoch` (an older epoch's send,
  // processed late, does not overwrite a newer one; a second send in the
  // same epoch with other bytes blocks the skip, see above).
  // Returns true when it was such a second send with other bytes.
  static bool sent(Block& b, uint64_t page_index, const PageHash& h, uint32_t epoch);
  // Something other than a multifd page wrote the page in `epoch`.
  void written_elsewhere(std::string_view block, uint64_t page_index, uint32_t epoch);
  size_t tracked_pages() const { return blocks_.tracked_pages(); }

 private:
  PageBlocks<Entry> blocks_;
};

}  // namespace mm::pages
