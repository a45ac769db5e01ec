// The destination's PageDecoder (dataplane/pages/PagePipeline.hpp) on a
// stream of page messages (MMP.md "Page records"), with the real LZ4 and
// zstd codecs and no DEFLATE (no compressdev). Input: a mode byte, then
// pieces (FuzzCheck.hpp), one message each. With mode bit 0 the harness
// first makes each message's hashes, page count and offset digest right --
// what only an honest sender can do -- so the fuzzer reaches everything
// behind the checks (dictionary references, deltas, in-place pages, codecs).
// With mode bit 1 both decoders check PAGE_SAME records against a record
// of what they delivered. Properties: a decoder that copies pages and one
// that points into the message (in_place) accept and refuse the same
// messages and give the same pages, page-aligned and within pages_alloc.
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "dataplane/pages/PageDelta.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm;
using namespace mm::pages;

namespace {

struct Codecs {
  Lz4Codec lz4;
  ZstdCodec zstd;
  PageDecoder::CodecFor get() {
    return [this](CodecKind k, std::string* why) -> PageCodec* {
      if (k == CodecKind::lz4) return &lz4;
      if (k == CodecKind::zstd) return &zstd;
      *why = "no compressdev";
      return nullptr;
    };
  }
};

// Makes `m` what an honest sender with the same dictionary would have
// sent: every hash, MULTIFD_END's count and digest (dataplane/wire/Records.cpp
// gives the offsets of these fields).
void make_honest(std::vector<uint8_t>& m, Codecs& c, std::unique_ptr<DedupeDictionary>& dict) {
  wire::RecordReader r(m);
  wire::Record rec;
  std::vector<uint8_t> be;
  uint32_t pages = 0;
  alignas(64) uint8_t page[kPageSize];
  for (size_t at = 0; r.next(rec) == wire::RecordError::ok; at = r.offset()) {
    uint8_t* p = m.data() + at;
    switch (rec.type) {
      case wire::RecordType::multifd_begin:
        if (!dict && rec.begin.dict_slots > 0 && rec.begin.dict_slots <= kMaxDedupeSlots) {
          dict = std::make_unique<DedupeDictionary>(rec.begin.dict_slots,
                                                    DedupeDictionary::Role::receiver);
        }
        break;
      case wire::RecordType::multifd_end:
        wire::put_be32(p + 1, pages);
        wire::put_be64(p + 5, offsets_digest_be(be.data(), pages));
        break;
      case wire::RecordType::page_raw:
      case wire::RecordType::page_lz4:
      case wire::RecordType::page_zstd:
      case wire::RecordType::page_ref: {
        const uint8_t* src = nullptr;
        if (rec.type == wire::RecordType::page_raw) src = rec.body.data();
        if (rec.type == wire::RecordType::page_lz4 &&
            c.lz4.decompress(rec.body.data(), rec.body.size(), page))
          src = page;
        if (rec.type == wire::RecordType::page_zstd &&
            c.zstd.decompress(rec.body.data(), rec.body.size(), page))
          src = page;
        if (rec.type == wire::RecordType::page_ref && dict) src = dict->get(rec.slot);
        if (src) {
          const PageHash h = page_hash(src);
          wire::put_be64(p + 9, record_hash(h));
          if (dict && rec.type != wire::RecordType::page_ref) dict->insert(src, h);
        }
        break;
      }
      case wire::RecordType::page_delta: {
        const uint8_t* base = dict ? dict->get(rec.slot) : nullptr;
        if (base && delta_apply(base, rec.body, page)) {
          const PageHash h = page_hash(page);
          wire::put_be64(p + 9, record_hash(h));
          dict->insert(page, h);
        }
        break;
      }
      default:
        break;
    }
    if (wire::is_page_record(rec.type)) {
      be.resize(be.size() + 8);
      wire::put_be64(be.data() + be.size() - 8, rec.page);
      ++pages;
    }
  }
}

// A peer may ask for a dictionary of up to kMaxDedupeSlots pages (1 GiB);
// allocating that on every input would make the fuzzer crawl, so larger
// sizes are folded into 1..4096 (the decoder's code is the same for all).
// Page offsets are folded too (see below); the table's bound itself is
// tested in tests/unit/pages_test.cpp.
void fold_dictionary(std::vector<uint8_t>& m) {
  wire::RecordReader r(m);
  wire::Record rec;
  for (size_t at = 0; r.next(rec) == wire::RecordError::ok; at = r.offset()) {
    if (rec.type == wire::RecordType::multifd_begin && rec.begin.dict_slots > 4096) {
      wire::put_be32(m.data() + at + 17, 1 + rec.begin.dict_slots % 4096);
    }
    // Likewise the table of deliveries grows to the largest page offset
    // seen (up to 1 GiB, DeliveredTable::kMaxPages): offsets are folded
    // into the first 64 MiB (page-aligned ones stay page-aligned).
    if (wire::is_page_record(rec.type) && rec.page >= (uint64_t(64) << 20)) {
      wire::put_be64(m.data() + at + 1, rec.page % (uint64_t(64) << 20));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool honest = data[0] & 1;
  static Codecs codecs;  // stateless between pages; built once
  PageDecoder copying(codecs.get(), false), in_place(codecs.get(), true);
  // Mode bit 1: the source's unchanged filter is on, so PAGE_SAME records
  // are checked against what each decoder delivered (its own table).
  DeliveredTable copying_table, in_place_table;
  if (data[0] & 2) {
    copying.set_delivered(&copying_table);
    in_place.set_delivered(&in_place_table);
  }
  std::unique_ptr<DedupeDictionary> mirror;
  // Kept from input to input, as a stream keeps it from packet to packet
  // (PagePipeline.hpp): what a packet decodes to must not depend on it.
  static DecodedPacket a, b;
  fuzz::Pieces in({data + 1, size - 1});
  std::span<const uint8_t> piece;
  std::vector<uint8_t> m;
  while (in.next(piece)) {
    m.assign(piece.begin(), piece.end());
    fold_dictionary(m);
    if (honest) make_honest(m, codecs, mirror);
    const std::string ea = copying.decode(m, a);
    const std::string eb = in_place.decode(m, b);
    MM_FUZZ_CHECK(ea == eb);
    if (!ea.empty()) break;  // the session fails: nothing more is decoded
    MM_FUZZ_CHECK(a.offsets == b.offsets && a.omitted == b.omitted && a.ramblock == b.ramblock);
    MM_FUZZ_CHECK(a.flags == b.flags && a.pages_alloc == b.pages_alloc &&
                  a.packet_num == b.packet_num);
    MM_FUZZ_CHECK(a.offsets.size() + a.omitted <= a.pages_alloc);
    for (size_t k = 0; k < a.offsets.size(); ++k) {
      MM_FUZZ_CHECK(a.offsets[k] % kPageSize == 0);
      MM_FUZZ_CHECK(std::memcmp(a.page(k), b.page(k), kPageSize) == 0);
    }
  }
  return 0;
}
