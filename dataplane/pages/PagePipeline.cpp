#include "dataplane/pages/PagePipeline.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no allocation
#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "dataplane/pages/PageDelta.hpp"
#include "dataplane/wire/Mmp.hpp"

namespace mm::pages {

PageStats& PageStats::operator+=(const PageStats& o) {
  packets += o.packets;
  sync_packets += o.sync_packets;
  pages += o.pages;
  zero += o.zero;
  unchanged += o.unchanged;
  unchanged_refused += o.unchanged_refused;
  unchanged_held += o.unchanged_held;
  dedupe_hits += o.dedupe_hits;
  compressed += o.compressed;
  compressed_bytes += o.compressed_bytes;
  raw += o.raw;
  record_bytes += o.record_bytes;
  verified += o.verified;
  written += o.written;
  auto_heavy_packets += o.auto_heavy_packets;
  auto_switches += o.auto_switches;
  stored += o.stored;
  unchanged_conflicts += o.unchanged_conflicts;
  stored_refused += o.stored_refused;
  delta += o.delta;
  delta_bytes += o.delta_bytes;
  delta_bases += o.delta_bases;
  delta_image += o.delta_image;
  return *this;
}

namespace {
// QEMU's SYNC flag (MULTIFD_FLAG_SYNC, dataplane/qemu/MultifdPacket.hpp);
// counted, carried through.
constexpr uint32_t kQemuSyncFlag = 0x1;
// QEMU 7.2 allocates 128 offsets per packet; its parser allows up to 1024.
constexpr uint32_t kMaxPagesAlloc = 1024;

wire::RecordType record_type(CodecKind k) {
  switch (k) {
    case CodecKind::lz4: return wire::RecordType::page_lz4;
    case CodecKind::zstd: return wire::RecordType::page_zstd;
    case CodecKind::deflate: return wire::RecordType::page_deflate;
    case CodecKind::raw: break;
  }
  return wire::RecordType::page_raw;
}

CodecKind codec_of(wire::RecordType t) {
  switch (t) {
    case wire::RecordType::page_lz4: return CodecKind::lz4;
    case wire::RecordType::page_zstd: return CodecKind::zstd;
    case wire::RecordType::page_deflate: return CodecKind::deflate;
    default: return CodecKind::raw;
  }
}
}  // namespace

const uint8_t* zero_page() {
  alignas(64) static const uint8_t zeros[kPageSize] = {};
  return zeros;
}

uint64_t offsets_digest(std::span<const uint64_t> offsets) {
  // XXH3-64 of the offsets as big-endian 8-byte values, in order, fed in
  // chunks (streaming gives the one-shot hash of the whole).
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  uint8_t be[64 * 8];
  for (size_t k = 0; k < offsets.size();) {
    const size_t n = std::min<size_t>(64, offsets.size() - k);
    for (size_t j = 0; j < n; ++j) wire::put_be64(be + 8 * j, offsets[k + j]);
    XXH3_64bits_update(&st, be, n * 8);
    k += n;
  }
  return XXH3_64bits_digest(&st);
}

uint64_t offsets_digest_be(const uint8_t* be, size_t n) { return XXH3_64bits(be, n * 8); }

PageEncoder::PageEncoder(const PagePolicy& policy, PageCodec* codec, UnchangedFilter* filter)
    : policy_(policy),
      codec_(codec),
      filter_(policy.unchanged ? filter : nullptr),
      scratch_(std::make_unique_for_overwrite<uint8_t[]>(kCompressBound)) {
  if (policy_.codec == CodecKind::raw) codec_ = nullptr;
  if (policy_.dedupe && policy_.dedupe_slots > 0) {
    dict_ = std::make_unique<DedupeDictionary>(policy_.dedupe_slots, DedupeDictionary::Role::sender, policy_.delta);
    if (policy_.delta) delta_ = std::make_unique_for_overwrite<uint8_t[]>(kDeltaLimit);
    blocks_.reserve(8);
  }
}

uint64_t PageEncoder::block_key(std::string_view name) {
  if (!blocks_.empty() && blocks_[last_block_key_ >> 48] == name) return last_block_key_;
  size_t k = 0;
  while (k < blocks_.size() && blocks_[k] != name) ++k;
  if (k == blocks_.size()) blocks_.emplace_back(name);  // once per RAM block of the stream
  last_block_key_ = uint64_t(k) << 48;
  return last_block_key_;
}

size_t PageEncoder::max_message(size_t n_pages) {
  return wire::kMultifdBeginHead + wire::kMaxRamblockName + n_pages * wire::kPageRawRecordSize + wire::kMultifdEndRecordSize;
}

void PageEncoder::encode(const PacketView& p, uint32_t epoch, bool may_skip, wire::RecordWriter& w,
                         uint8_t channels) {
  const size_t start = w.size();
  wire::MultifdBegin b;
  b.flags = p.flags;
  b.pages_alloc = p.pages_alloc;
  b.packet_num = p.packet_num;
  b.dict_slots = dict_ ? dict_->slots() : 0;
  b.channels = channels;
  b.ramblock = p.ramblock;
  w.put_multifd_begin(b);
  UnchangedFilter::Block* block = filter_ && !p.offsets.empty() ? &filter_->block(p.ramblock) : nullptr;
  store::Capture* cap = capture_;
  const uint16_t cap_block = cap && !p.offsets.empty() ? cap->block(p.ramblock) : 0;
  const store::PageTable::Block* known = table_ && !p.offsets.empty() ? table_->block(p.ramblock) : nullptr;
  const uint64_t bkey = delta_ && !p.offsets.empty() ? block_key(p.ramblock) : DedupeDictionary::kNoKey;
  // Warm re-migration with delta: this host's version of a page, where it
  // is the one the destination's image holds.
  const store::Image::Block* own =
      known && delta_ && base_image_ && !p.offsets.empty() ? base_image_->block(p.ramblock) : nullptr;
  for (size_t i = 0; i < p.offsets.size(); ++i) {
    const uint64_t off = p.offsets[i];
    const uint64_t index = off / kPageSize;
    const uint8_t* page = p.pages + i * kPageSize;
    ++stats_.pages;
    if (policy_.zero && is_zero_page(page)) {
      // Counted as sent: a later identical zero page may then go as SAME.
      if (block && UnchangedFilter::sent(*block, index, zero_page_hash(), epoch)) ++stats_.unchanged_conflicts;
      w.put_page_zero(off);
      if (cap) cap->page(cap_block, index, epoch, zero_page_hash(), store::Content::zero);
      ++stats_.zero;
      continue;
    }
    const PageHash h = page_hash(page);
    // The codec's output for the page, once it was made (a delta's size is
    // weighed against it, and the page may then go compressed after all).
    size_t compressed = 0;
    bool compressed_made = false;
    if (block) {
      if (UnchangedFilter::can_skip(*block, index, h, epoch)) {
        if (may_skip) {
          w.put_page_same(off, record_hash(h));
          ++stats_.unchanged;
          continue;
        }
        ++stats_.unchanged_held;
      }
      if (UnchangedFilter::sent(*block, index, h, epoch)) ++stats_.unchanged_conflicts;
    }
    if (known && index < known->hash.size() && known->hash[index] == h.lo && h.lo != 0) {
      // The destination's image holds these bytes: it checks the full hash.
      w.put_page_stored(off, h.lo, h.hi);
      // No bytes here: the image merge takes them from this host's prior
      // image of the VM if it holds the page with this hash.
      if (cap) cap->page(cap_block, index, epoch, h, store::Content::ref);
      ++stats_.stored;
      continue;
    }
    if (dict_) {
      if (auto slot = dict_->find(page, h)) {
        w.put_page_ref(off, record_hash(h), *slot);
        if (cap) cap->page(cap_block, index, epoch, h, store::Content::ref);
        ++stats_.dedupe_hits;
        continue;
      }
      const uint64_t key = delta_ ? bkey | index : DedupeDictionary::kNoKey;
      if (own && index < known->hash.size() && known->hash[index] != 0 && index < own->pages.size() &&
          own->pages[index].hash.lo == known->hash[index]) {
        if (const uint8_t* base = base_image_->view(own->pages[index])) {
          const size_t n = delta_encode(page, base, delta_.get(), kDeltaDirect);
          if (n > 0) {
            dict_->insert(page, h, key);  // as for any page that carries bytes (both ends)
            w.put_page_delta(off, record_hash(h), wire::kDeltaImageSlot, {delta_.get(), n});
            if (cap) cap->page(cap_block, index, epoch, h, store::Content::raw, {page, kPageSize});
            ++stats_.delta;
            ++stats_.delta_image;
            stats_.delta_bytes += n;
            continue;
          }
        }
      }
      if (delta_) {
        if (auto base = dict_->find_base(key)) {
          ++stats_.delta_bases;
          const size_t n = delta_encode(page, dict_->slot_bytes(*base), delta_.get(), kDeltaLimit);
          // Smaller than the codec would make it: certainly so when tiny.
          if (n > kDeltaDirect && codec_) {
            compressed = codec_->compress(page, scratch_.get(), kCompressBound);
            compressed_made = true;
          }
          if (n > 0 && (compressed == 0 || n <= compressed)) {
            // Inserted after the delta was made against the base (the
            // insert may take the base's slot): the destination does the same.
            dict_->insert(page, h, key);
            w.put_page_delta(off, record_hash(h), *base, {delta_.get(), n});
            if (cap) cap->page(cap_block, index, epoch, h, store::Content::raw, {page, kPageSize});
            ++stats_.delta;
            stats_.delta_bytes += n;
            continue;
          }
        }
      }
      dict_->insert(page, h, key);
    }
    // Compressed into an L1-resident scratch page, then copied behind the
    // record header (the record's length field comes first on the wire).
    const size_t n = compressed_made ? compressed : codec_ ? codec_->compress(page, scratch_.get(), kCompressBound) : 0;
    if (n > 0 && n <= wire::kMaxCompressedPage) {
      w.put_page_compressed(record_type(codec_->kind()), off, record_hash(h), {scratch_.get(), n});
      if (cap) cap->page(cap_block, index, epoch, h, store::content_of(codec_->kind()), {scratch_.get(), n});
      ++stats_.compressed;
      stats_.compressed_bytes += n;
    } else {
      w.put_page_raw(off, record_hash(h), page);
      if (cap) cap->page(cap_block, index, epoch, h, store::Content::raw, {page, kPageSize});
      ++stats_.raw;
    }
  }
  const uint64_t digest =
      p.offsets_be ? offsets_digest_be(p.offsets_be, p.offsets.size()) : offsets_digest(p.offsets);
  w.put_multifd_end({uint32_t(p.offsets.size()), digest});
  ++stats_.packets;
  if (heavy_) ++stats_.auto_heavy_packets;
  if (p.flags & kQemuSyncFlag) ++stats_.sync_packets;
  stats_.record_bytes += w.size() - start;
}

PageDecoder::PageDecoder(CodecFor codecs, bool in_place)
    : codecs_(std::move(codecs)),
      in_place_(in_place),
      be_offsets_(std::make_unique_for_overwrite<uint8_t[]>(size_t(kMaxPagesAlloc) * 8)) {}

void PageDecoder::set_image(std::shared_ptr<const store::Image> img) {
  image_ = std::move(img);
  image_codecs_ = [this](CodecKind k) { return codecs_ ? codecs_(k, nullptr) : nullptr; };
}

const store::Image::Page* PageDecoder::image_page(const std::string& block, uint64_t offset,
                                                  const store::Image::Block*& cached) const {
  if (!cached) cached = image_->block(block);
  const uint64_t idx = offset / kPageSize;
  return cached && idx < cached->pages.size() ? &cached->pages[idx] : nullptr;
}

std::string PageDecoder::decode(std::span<const uint8_t> message, DecodedPacket& out) {
  wire::RecordReader r(message);
  wire::Record rec;
  wire::RecordError e = r.next(rec);
  if (e != wire::RecordError::ok || rec.type != wire::RecordType::multifd_begin) {
    return "page message does not start with MULTIFD_BEGIN";
  }
  const wire::MultifdBegin& b = rec.begin;
  if (b.pages_alloc == 0 || b.pages_alloc > kMaxPagesAlloc) {
    return "MULTIFD_BEGIN with pages_alloc " + std::to_string(b.pages_alloc) + " (1.." +
           std::to_string(kMaxPagesAlloc) + ")";
  }
  if (b.dict_slots > kMaxDedupeSlots) {
    return "peer's dedupe dictionary of " + std::to_string(b.dict_slots) + " slots exceeds " +
           std::to_string(kMaxDedupeSlots);
  }
  if (b.dict_slots > 0 && !dict_) {
    dict_ = std::make_unique<DedupeDictionary>(b.dict_slots, DedupeDictionary::Role::receiver);
  }
  if (dict_ && b.dict_slots != 0 && b.dict_slots != dict_->slots()) {
    return "peer changed its dedupe dictionary size mid-stream";
  }
  // Storage grows to the largest packet once, then is reused.
  if (out.offsets.capacity() < kMaxPagesAlloc) out.offsets.reserve(kMaxPagesAlloc);
  if (out.page_at.capacity() < kMaxPagesAlloc) out.page_at.reserve(kMaxPagesAlloc);
  if (out.ramblock.capacity() < wire::kMaxRamblockName) out.ramblock.reserve(wire::kMaxRamblockName);
  if (out.pages.size() < size_t(b.pages_alloc) * kPageSize) out.pages.resize(size_t(b.pages_alloc) * kPageSize);
  out.flags = b.flags;
  out.pages_alloc = b.pages_alloc;
  out.packet_num = b.packet_num;
  out.ramblock.assign(b.ramblock);
  out.offsets.clear();
  out.page_at.clear();
  out.omitted = 0;
  uint32_t records = 0;  // page records so far (their offsets are in be_offsets_)
  const store::Image::Block* image_block = nullptr;  // found at the first PAGE_STORED
  bool ended = false;
  PageStats s;
  // The stream's epoch: its SYNC packets before this one (as the source's).
  store::Capture* cap = capture_ && !out.ramblock.empty() ? capture_ : nullptr;
  const uint16_t cap_block = cap ? cap->block(out.ramblock) : 0;
  const uint32_t epoch = uint32_t(stats_.sync_packets);
  DeliveredTable::Block* dblock = delivered_ && !out.ramblock.empty() ? &delivered_->block(out.ramblock) : nullptr;
  while ((e = r.next(rec)) == wire::RecordError::ok) {
    if (ended) return "records after MULTIFD_END";
    if (rec.type == wire::RecordType::multifd_end) {
      if (rec.end.pages != records) {
        return "MULTIFD_END counts " + std::to_string(rec.end.pages) + " pages, the packet had " +
               std::to_string(records);
      }
      if (rec.end.offsets_digest != offsets_digest_be(be_offsets_.get(), records)) {
        return "MULTIFD_END offset digest does not match the page records";
      }
      ended = true;
      continue;
    }
    if (!wire::is_page_record(rec.type)) {
      return "unexpected record type " + std::to_string(int(rec.type)) + " inside a multifd packet";
    }
    if (records == b.pages_alloc) {
      return "more page records than the packet's pages_alloc " + std::to_string(b.pages_alloc);
    }
    if (b.ramblock.empty()) return "page records in a packet without a RAM block";
    wire::put_be64(be_offsets_.get() + 8 * size_t(records), rec.page);
    ++records;
    ++s.pages;
    if (rec.type == wire::RecordType::page_same) {
      // Omitted from the packet: QEMU keeps what it holds, which must be
      // what the source says (DeliveredTable.hpp).
      if (!dblock) {
        ++stats_.unchanged_refused;
        return "PAGE_SAME for page at offset " + std::to_string(rec.page) + " of " + out.ramblock +
               ", but this destination was not told that the source's unchanged filter is on (the `pages` of the "
               "offer or of session-prepare): it keeps no record of what it delivered";
      }
      if (const std::string why = !delivered_->distrusted().empty()
                                      ? delivered_->distrusted()
                                      : DeliveredTable::check(*dblock, rec.page / kPageSize, rec.hash, epoch);
          !why.empty()) {
        ++stats_.unchanged_refused;
        return "PAGE_SAME for page at offset " + std::to_string(rec.page) + " of " + out.ramblock + " in epoch " +
               std::to_string(epoch) + " refused: " + why;
      }
      ++out.omitted;
      ++s.unchanged;
      continue;
    }
    uint8_t* own = out.pages.data() + out.offsets.size() * kPageSize;  // this page's room in `pages`
    const uint8_t* page = own;
    switch (rec.type) {
      case wire::RecordType::page_zero:
        if (in_place_) {
          page = zero_page();
        } else {
          std::memset(own, 0, kPageSize);
        }
        ++s.zero;
        if (cap) cap->page(cap_block, rec.page / kPageSize, epoch, zero_page_hash(), store::Content::zero);
        if (dblock) DeliveredTable::delivered(*dblock, rec.page / kPageSize, record_hash(zero_page_hash()), epoch);
        break;
      case wire::RecordType::page_raw:
        if (in_place_) {
          page = rec.body.data();  // checked below, where it lies in the message
        } else {
          std::memcpy(own, rec.body.data(), kPageSize);
        }
        ++s.raw;
        break;
      case wire::RecordType::page_ref: {
        const uint8_t* src = dict_ ? dict_->get(rec.slot) : nullptr;
        if (!src) return "PAGE_REF to dictionary slot " + std::to_string(rec.slot) + ", which holds no page";
        // In place only if none of the inserts this packet may still make
        // (at most one per remaining record) reaches the slot.
        const uint32_t dist = rec.slot >= dict_->next() ? rec.slot - dict_->next()
                                                        : rec.slot + dict_->slots() - dict_->next();
        if (in_place_ && dist >= b.pages_alloc - records) {
          page = src;
        } else {
          std::memcpy(own, src, kPageSize);
        }
        ++s.dedupe_hits;
        break;
      }
      case wire::RecordType::page_delta: {
        // The base is read before this page's own insert (which may take
        // its slot), as the sender made it.
        const uint8_t* base = nullptr;
        if (rec.slot == wire::kDeltaImageSlot) {
          // Against this host's image of the VM, that page: its bytes as the
          // image holds them (checked against their hash) or decoded into
          // the page's room first.
          if (!image_) {
            ++stats_.stored_refused;
            return "PAGE_DELTA against the image, but this destination holds no image of the VM";
          }
          const store::Image::Page* sp = image_page(out.ramblock, rec.page, image_block);
          if (!sp || sp->content == store::Content::none) {
            ++stats_.stored_refused;
            return "PAGE_DELTA against the image for page at offset " + std::to_string(rec.page) + " of " +
                   out.ramblock + ", which the image does not hold";
          }
          if (const std::string why = image_->read(*sp, own, image_codecs_); !why.empty()) {
            ++stats_.stored_refused;
            return "PAGE_DELTA against the image for page at offset " + std::to_string(rec.page) + ": " + why;
          }
          base = own;
          ++s.delta_image;
        } else {
          base = dict_ ? dict_->get(rec.slot) : nullptr;
        }
        if (!base) return "PAGE_DELTA against dictionary slot " + std::to_string(rec.slot) + ", which holds no page";
        if (!delta_apply(base, rec.body, own)) {
          return "PAGE_DELTA for page at offset " + std::to_string(rec.page) + " of " + out.ramblock +
                 " is malformed";
        }
        ++s.delta;
        s.delta_bytes += rec.body.size();
        break;
      }
      case wire::RecordType::page_stored: {
        // The bytes come from this host's image of the VM: the page the
        // image holds must carry this very 128-bit hash, and its stored
        // bytes must hash to it once decoded (Image::read checks).
        if (!image_) {
          ++stats_.stored_refused;
          return "PAGE_STORED but this destination holds no image of the VM";
        }
        const uint64_t idx = rec.page / kPageSize;
        const store::Image::Page* sp = image_page(out.ramblock, rec.page, image_block);
        if (!sp || sp->content == store::Content::none || sp->hash.lo != rec.hash || sp->hash.hi != rec.hash_hi) {
          ++stats_.stored_refused;
          return "PAGE_STORED for page at offset " + std::to_string(rec.page) + " of " + out.ramblock +
                 " does not match this host's image of the VM";
        }
        if (const uint8_t* v = image_->view(*sp)) {
          // Kept raw (Image::inflate): checked where it lies, then used there.
          if (!(page_hash(v) == sp->hash)) {
            ++stats_.stored_refused;
            return "PAGE_STORED for page at offset " + std::to_string(rec.page) +
                   ": stored page does not match its hash";
          }
          if (in_place_) {
            page = v;
          } else {
            std::memcpy(own, v, kPageSize);
          }
        } else if (const std::string why = image_->read(*sp, own, image_codecs_); !why.empty()) {
          ++stats_.stored_refused;
          return "PAGE_STORED for page at offset " + std::to_string(rec.page) + ": " + why;
        }
        ++s.stored;
        ++s.verified;
        if (cap) cap->page(cap_block, idx, epoch, sp->hash, store::Content::ref);  // bytes: the image's
        if (dblock) DeliveredTable::delivered(*dblock, idx, rec.hash, epoch);
        break;
      }
      default: {
        std::string why;
        PageCodec* c = codecs_ ? codecs_(codec_of(rec.type), &why) : nullptr;
        if (!c) return "cannot decode a " + std::string(to_string(codec_of(rec.type))) + " page: " + why;
        if (!c->decompress(rec.body.data(), rec.body.size(), own)) {
          return std::string(to_string(codec_of(rec.type))) + " page at offset " + std::to_string(rec.page) +
                 " does not decompress to one page";
        }
        ++s.compressed;
        s.compressed_bytes += rec.body.size();
        break;
      }
    }
    if (rec.type != wire::RecordType::page_zero && rec.type != wire::RecordType::page_stored) {
      const PageHash h = page_hash(page);
      if (record_hash(h) != rec.hash) {
        return "page at offset " + std::to_string(rec.page) + " of " + out.ramblock + " fails its hash check (" +
               std::string(rec.type == wire::RecordType::page_delta ? "delta" : to_string(codec_of(rec.type))) +
               ")";
      }
      ++s.verified;
      if (dblock) DeliveredTable::delivered(*dblock, rec.page / kPageSize, rec.hash, epoch);
      // Mirror the sender: every page sent in full enters the dictionary.
      if (dict_ && rec.type != wire::RecordType::page_ref) dict_->insert(page, h);
      if (cap) {
        const uint64_t idx = rec.page / kPageSize;
        switch (rec.type) {
          case wire::RecordType::page_ref: cap->page(cap_block, idx, epoch, h, store::Content::ref); break;
          case wire::RecordType::page_raw:
          case wire::RecordType::page_delta:
            cap->page(cap_block, idx, epoch, h, store::Content::raw, {page, kPageSize});
            break;
          default: cap->page(cap_block, idx, epoch, h, store::content_of(codec_of(rec.type)), rec.body);
        }
      }
    }
    out.offsets.push_back(rec.page);
    out.page_at.push_back(page);
  }
  if (e != wire::RecordError::end) {
    return "page message: " + std::string(wire::to_string(e)) + " at offset " + std::to_string(r.offset());
  }
  if (!ended) return "page message without MULTIFD_END";
  ++s.packets;
  if (out.flags & kQemuSyncFlag) ++s.sync_packets;
  s.record_bytes = message.size();
  s.written = out.offsets.size();
  stats_ += s;
  return {};
}

}  // namespace mm::pages
