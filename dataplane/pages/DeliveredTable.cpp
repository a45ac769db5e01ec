#include "dataplane/pages/DeliveredTable.hpp"

namespace mm::pages {

void DeliveredTable::write(Block& b, uint64_t i, const Write& w) {
  Entry* at = PageBlocks<Entry>::at(b, i);
  if (!at) return;
  Entry& e = *at;
  if (w.epoch > e.last.epoch) {
    e.earlier = e.last;
    e.last = w;
  } else if (w.epoch == e.last.epoch) {
    // A second write in the epoch: QEMU applies the two in either order.
    if (w.unknown || w.hash != e.last.hash) e.last.unknown = true;
  } else if (w.epoch > e.earlier.epoch) {
    // A write of an older epoch after a later one's (messages the session
    // does not order, before the source's filter is on): still the last
    // one before `last` seen so far.
    e.earlier = w;
  } else if (w.epoch == e.earlier.epoch) {
    if (w.unknown || w.hash != e.earlier.hash) e.earlier.unknown = true;
  }
}

void DeliveredTable::delivered(Block& b, uint64_t i, uint64_t hash, uint32_t epoch) {
  write(b, i, {hash, epoch + 1, false});
}

void DeliveredTable::delivered_unknown(Block& b, uint64_t i, uint32_t epoch) { write(b, i, {0, epoch + 1, true}); }

std::string DeliveredTable::check(const Block& b, uint64_t i, uint64_t hash, uint32_t epoch) {
  if (i >= b.size() || b[i].last.epoch == 0) return "no earlier delivery of the page is known here";
  const Entry& e = b[i];
  // The last write of an epoch before this one.
  const Write& w = e.last.epoch <= epoch ? e.last : e.earlier;
  if (w.epoch == 0 || w.epoch > epoch) return "no delivery of the page in an earlier epoch is known here";
  if (w.unknown) return "what the page holds since epoch " + std::to_string(w.epoch - 1) + " is not known here";
  if (w.hash != hash) return "the page was last delivered with other bytes";
  return {};
}

}  // namespace mm::pages
