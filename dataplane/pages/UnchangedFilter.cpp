#include "dataplane/pages/UnchangedFilter.hpp"

#include <algorithm>

namespace mm::pages {

namespace {
UnchangedFilter::Entry* entry(UnchangedFilter::Block& b, uint64_t i) {
  if (i >= UnchangedFilter::kMaxPages) return nullptr;
  if (i >= b.size()) b.resize(std::min<size_t>(std::max<size_t>(i + 1, b.size() * 2), UnchangedFilter::kMaxPages));
  return &b[i];
}
}  // namespace

UnchangedFilter::Block& UnchangedFilter::block(std::string_view name) {
  auto it = blocks_.find(name);
  if (it == blocks_.end()) it = blocks_.emplace(std::string(name), std::make_unique<Block>()).first;
  return *it->second;
}

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
  Entry* e = entry(b, i);
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
  Entry* e = entry(block(name), i);
  if (e) e->other = std::max(e->other, epoch + 1);
}

size_t UnchangedFilter::tracked_pages() const {
  size_t n = 0;
  for (const auto& [name, b] : blocks_) n += b->size();
  return n;
}

}  // namespace mm::pages
