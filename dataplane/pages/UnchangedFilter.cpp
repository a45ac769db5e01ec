#include "dataplane/pages/UnchangedFilter.hpp"

#include <algorithm>

namespace mm::pages {

bool UnchangedFilter::can_skip(const Block& b, uint64_t i, const PageHash& h, uint32_t epoch) {
  if (i >= b.size()) return false;
  const Entry& e = b[i];
  if (e.sent == 0 || !(e.hash == h)) return false;
  const uint32_t sent_epoch = e.sent - 1;
  if (sent_epoch >= epoch) return false;
  // Another write in or after the epoch of the last send: the destination
  // may no longer hold those bytes.
  return e.other == 0 || e.other - 1 < sent_epoch;
}

bool UnchangedFilter::sent(Block& b, uint64_t i, const PageHash& h, uint32_t epoch) {
  Entry* e = PageBlocks<Entry>::at(b, i);
  if (!e) return false;
  const bool conflict = e->sent == epoch + 1 && !(e->hash == h);
  if (conflict) {
    // QEMU 7.2 sent the page twice in one epoch, on two channels (it
    // repeats the last page of a full multifd packet as the first of the
    // next one now and then), with different bytes: the destination's
    // QEMU applies the two packets in either order, so what it holds is
    // unknown until a later epoch sends the page again.
    e->other = std::max(e->other, epoch + 1);
  }
  if (e->sent == 0 || epoch + 1 >= e->sent) {
    e->hash = h;
    e->sent = epoch + 1;
  }
  return conflict;
}

void UnchangedFilter::written_elsewhere(std::string_view name, uint64_t i, uint32_t epoch) {
  Entry* e = PageBlocks<Entry>::at(block(name), i);
  if (e) e->other = std::max(e->other, epoch + 1);
}

}  // namespace mm::pages
