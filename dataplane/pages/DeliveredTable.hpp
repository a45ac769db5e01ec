// The destination's half of the unchanged filter (dataplane/wire/MMP.md
// "Unchanged pages"): per RAM block, the hash of what this daemon last
// delivered to its QEMU for every page, so that a PAGE_SAME record, which
// carries the page's hash, is checked like any other page before the
// packet it belongs to reaches QEMU.
//
// What QEMU holds for a page is its last write in epoch order (the epoch:
// the SYNC packets before a multifd packet on its channel, the RAM EOS
// markers before a main-channel record; QEMU 7.2 syncs every channel
// before each EOS). A SAME in epoch e says: the page still holds what was
// written last in an epoch before e. The session makes sure every write of
// those epochs is here before it checks (it holds a stream's messages of
// epoch e until every ordered stream and the main channel are past e - 1:
// Session::same_gate), so an entry needs only the last write and the last
// one of an earlier epoch than that: in epoch e another channel may have
// written the page already (QEMU now and then sends the last page of a
// full packet again as the first of the next), and the check then looks
// past it (a write of an older epoch that comes late takes `earlier` if it
// is the newest before `last`). Two writes in one epoch with other bytes,
// or a write whose bytes the daemon does not see (a raw page on the main
// channel): the entry cannot say, and a SAME against it is refused (the
// source never sends one there: it keeps the same rules,
// UnchangedFilter.hpp). Pure code, one owner (the session's home part).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "dataplane/pages/PageBlocks.hpp"

namespace mm::pages {

class DeliveredTable {
 public:
  struct Write {
    uint64_t hash = 0;   // low 64 bits of the page's XXH3-128
    uint32_t epoch = 0;  // 1 + epoch of the write; 0: none
    bool unknown = false;  // bytes not seen, or two different writes in the epoch
  };
  struct Entry {
    Write last;      // the last write in epoch order
    Write earlier;   // the last write of an epoch before last's
  };
  // Pages beyond this index are never tracked; a SAME for one is refused
  // (the source's filter, which tracks no further, never sends one).
  static constexpr uint64_t kMaxPages = kMaxTrackedPages;
  using Block = PageBlocks<Entry>::Block;

  Block& block(std::string_view name) { return blocks_.block(name); }
  // This daemon wrote the page with these bytes to QEMU in `epoch`.
  static void delivered(Block& b, uint64_t page_index, uint64_t hash, uint32_t epoch);
  // ... with bytes it did not see (a raw page on the main channel).
  static void delivered_unknown(Block& b, uint64_t page_index, uint32_t epoch);
  // Whether a PAGE_SAME of `epoch` with this hash is right: the page's last
  // write in an epoch before `epoch` had these very bytes. Else why not.
  static std::string check(const Block& b, uint64_t page_index, uint64_t hash, uint32_t epoch);
  // The session can no longer order what it delivers (its main channel
  // went opaque before the epoch a message needs): every later check is
  // refused with this reason.
  void distrust(std::string why) {
    if (distrust_.empty()) distrust_ = std::move(why);
  }
  const std::string& distrusted() const { return distrust_; }
  size_t tracked_pages() const { return blocks_.tracked_pages(); }
  size_t bytes() const { return tracked_pages() * sizeof(Entry); }

 private:
  static void write(Block& b, uint64_t page_index, const Write& w);
  PageBlocks<Entry> blocks_;
  std::string distrust_;
};

}  // namespace mm::pages
