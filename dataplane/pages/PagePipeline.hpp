// The page pipeline of a multifd stream (dataplane/wire/MMP.md "Page
// records"). The source's PageEncoder turns one QEMU multifd packet into a
// message of records: MULTIFD_BEGIN, one record per page (ZERO, SAME, REF,
// LZ4/ZSTD/DEFLATE or RAW, in that order of preference, as the session's
// policy allows), MULTIFD_END. The destination's PageDecoder checks such a
// message completely -- every record, every page's hash, the page count
// and offset digest -- before it hands back the pages QEMU must get, so
// nothing unverified is ever written to a guest. Pure code: no sockets.
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
#include "dataplane/pages/DedupeDictionary.hpp"
#include "dataplane/pages/DeliveredTable.hpp"
#include "dataplane/pages/UnchangedFilter.hpp"
#include "dataplane/store/Capture.hpp"
#include "dataplane/store/Image.hpp"
#include "dataplane/store/PageTable.hpp"
#include "dataplane/wire/Records.hpp"

namespace mm::pages {

// What a session does with pages (session-start "pages"; MMP.md).
struct PagePolicy {
  // auto_codec: each multifd flow picks per packet between `codec` (cheap:
  // LZ4) and zstd, from what holds it back: the link (pacer, window,
  // read-ahead) -> zstd, shrinking harder where bytes cost more than CPU;
  // the CPU (QEMU's bytes waiting) -> `codec`. Off: `codec` always.
  bool auto_codec = true;
  CodecKind codec = CodecKind::lz4;  // raw: no compression
  bool zero = true;                  // zero pages as PAGE_ZERO
  // Unchanged re-sends as PAGE_SAME, with the page's hash, which the
  // destination checks against what it last delivered (DeliveredTable.hpp).
  // On by default (the whole perf matrix passed with it checked: see
  // perf/results/20261202-same-checked). The price: a session with it on
  // keeps its streams on one worker at each end (engine::spreads), since the
  // source's filter and the destination's table each have one owner.
  bool unchanged = true;
  bool dedupe = true;                // repeats of a recent page as PAGE_REF
  uint32_t dedupe_slots = 16384;     // dictionary pages per stream (64 MiB)
  // A page sent again on the stream while its last version is still in the
  // dictionary goes as PAGE_DELTA (its changed words) when that is smaller.
  // Needs dedupe: the dictionary is the base cache.
  bool delta = true;
};
// A delta up to this size goes without trying the codec; a larger one (up
// to kDeltaLimit) only if the codec does not make the page smaller still.
inline constexpr size_t kDeltaDirect = 1024;
inline constexpr size_t kDeltaLimit = 2048;
// Upper bound a destination accepts for a peer's dictionary (1 GiB).
inline constexpr uint32_t kMaxDedupeSlots = 262144;

// Counters of one stream's pipeline; sessions sum them.
struct PageStats {
  uint64_t packets = 0;         // multifd packets encoded / decoded
  uint64_t sync_packets = 0;    // ... of them with QEMU's SYNC flag
  uint64_t pages = 0;           // pages QEMU sent (source) / that arrived (destination)
  uint64_t zero = 0;            // sent / arrived as PAGE_ZERO
  uint64_t unchanged = 0;       // PAGE_SAME: not sent again; destination: checked, omitted
  // destination: PAGE_SAME records refused (no record of the page's last
  // delivery in an earlier epoch, or other bytes): the session fails
  uint64_t unchanged_refused = 0;
  uint64_t unchanged_held = 0;  // source: unchanged, but sent because earlier epochs were not all seen
  // source: pages QEMU sent twice in one epoch with other bytes (see
  // UnchangedFilter.hpp): not skipped until sent again in a later epoch
  uint64_t unchanged_conflicts = 0;
  uint64_t dedupe_hits = 0;     // PAGE_REF
  uint64_t compressed = 0;      // PAGE_LZ4/ZSTD/DEFLATE
  uint64_t compressed_bytes = 0;  // their compressed bodies
  uint64_t raw = 0;             // PAGE_RAW (incompressible, or no codec)
  uint64_t record_bytes = 0;    // bytes of all records of these packets
  uint64_t verified = 0;        // destination: pages whose hash was checked
  uint64_t written = 0;         // destination: pages handed to QEMU
  uint64_t auto_heavy_packets = 0;  // source, auto codec: packets encoded with zstd
  uint64_t auto_switches = 0;       // source, auto codec: changes of codec
  // Warm re-migration: pages sent as PAGE_STORED (source) / filled from
  // this host's image of the VM after their hash checked (destination);
  // destination: PAGE_STORED records refused (no image, a hash that is not
  // the image's, stored bytes that do not check): the session fails.
  uint64_t stored = 0;
  uint64_t stored_refused = 0;
  // PAGE_DELTA: pages sent / rebuilt as their changes against the last
  // version the stream's dictionary holds, and the bytes of those changes;
  // source: delta_bases counts pages that found such a version (the hits
  // plus the pages whose delta was not smaller), so delta / delta_bases is
  // how often a found base paid and delta_bases / pages how often the base
  // cache held the page at all.
  uint64_t delta = 0;
  uint64_t delta_bytes = 0;
  uint64_t delta_bases = 0;
  // ... of delta: against the destination's image of the VM (warm
  // re-migration: a page changed since the image, whose image version this
  // source holds too).
  uint64_t delta_image = 0;

  PageStats& operator+=(const PageStats& o);
};

// One QEMU multifd packet as the source reads it.
struct PacketView {
  uint32_t flags = 0;
  uint32_t pages_alloc = 0;
  uint64_t packet_num = 0;
  std::string_view ramblock;
  std::span<const uint64_t> offsets;  // byte offsets in the block
  const uint8_t* pages = nullptr;     // offsets.size() pages, back to back
  // The same offsets as QEMU wrote them (big-endian, 8 bytes each), when the
  // caller has them: MULTIFD_END's digest is then hashed in place.
  const uint8_t* offsets_be = nullptr;
};

// Low 64 bits of the page's XXH3-128: the per-record hash (MMP.md).
inline uint64_t record_hash(const PageHash& h) { return h.lo; }
// MULTIFD_END's digest of a packet's page offsets, in order: XXH3-64 of
// the offsets as big-endian 8-byte values (no allocation).
uint64_t offsets_digest(std::span<const uint64_t> offsets);
// The same digest of n offsets already in that big-endian form.
uint64_t offsets_digest_be(const uint8_t* be, size_t n);

class PageEncoder {
 public:
  // codec: nullptr when the policy has none. filter: the session's (shared
  // by its streams), nullptr when the policy has no unchanged filter.
  PageEncoder(const PagePolicy& policy, PageCodec* codec, UnchangedFilter* filter);

  // Bytes the records of a packet of n pages take at most.
  static size_t max_message(size_t n_pages);
  // Appends the packet's records to w (which must hold max_message()).
  // epoch: the channel's SYNC count before this packet; may_skip: every
  // channel, and the main channel, are past the earlier epochs (see
  // UnchangedFilter.hpp) so PAGE_SAME is safe. channels: the multifd
  // channels the filter orders (MULTIFD_BEGIN's `channels`; 0: none).
  void encode(const PacketView& p, uint32_t epoch, bool may_skip, wire::RecordWriter& w,
              uint8_t channels = 0);
  const PageStats& stats() const { return stats_; }
  // Logs every page this encoder sends, with its bytes as sent, into the
  // flow's capture for the page store (nullptr: none).
  void set_capture(store::Capture* c) { capture_ = c; }
  // The page table of the image the destination holds of this VM: a page
  // whose hash it lists goes as PAGE_STORED (nullptr: none, or not yet).
  void set_table(const store::PageTable* t) { table_ = t; }
  // This host's own image of the VM (read-only, shared): a page the table
  // lists with another hash goes as PAGE_DELTA against the destination's
  // image when this image holds that very version raw (nullptr: none).
  void set_base_image(std::shared_ptr<const store::Image> img) { base_image_ = std::move(img); }
  // The auto codec's choice for the next packets (nullptr: raw); counted.
  void set_codec(PageCodec* codec, bool heavy) {
    if (codec != codec_) ++stats_.auto_switches;
    codec_ = codec;
    heavy_ = heavy;
  }

 private:
  PagePolicy policy_;
  PageCodec* codec_;
  bool heavy_ = false;  // codec_ is the auto codec's heavy one
  UnchangedFilter* filter_;
  store::Capture* capture_ = nullptr;
  const store::PageTable* table_ = nullptr;
  std::shared_ptr<const store::Image> base_image_;
  std::unique_ptr<DedupeDictionary> dict_;
  std::unique_ptr<uint8_t[]> scratch_;  // one compressed page (kCompressBound)
  std::unique_ptr<uint8_t[]> delta_;    // one delta (kDeltaLimit), when the policy has delta
  // The page key of the dictionary's base index: RAM blocks numbered in
  // the order this stream first saw them.
  uint64_t block_key(std::string_view name);
  std::vector<std::string> blocks_;
  uint64_t last_block_key_ = 0;
  PageStats stats_;
};

// One rebuilt packet at the destination: what QEMU gets. Its storage is
// kept from packet to packet (no allocation once it has held the largest).
struct DecodedPacket {
  uint32_t flags = 0;
  uint32_t pages_alloc = 0;
  uint64_t packet_num = 0;
  std::string ramblock;
  std::vector<uint64_t> offsets;  // pages carried (PAGE_SAME ones are omitted)
  // Where each carried page's bytes are. By default always in `pages` (the
  // k-th page at k x 4096); a decoder made with in_place points RAW pages
  // into the message, ZERO pages at a shared page of zeros and REF pages
  // into the dictionary (a slot a later record of the packet overwrites is
  // copied), so they are valid only until the message is released or the
  // next decode(), whichever is first.
  std::vector<const uint8_t*> page_at;
  std::vector<uint8_t> pages;     // decoded pages (may hold more room)
  uint32_t omitted = 0;
  const uint8_t* page(size_t k) const { return page_at[k]; }
};

// 4096 bytes of zeros, for pages that need no storage of their own.
const uint8_t* zero_page();

class PageDecoder {
 public:
  // Gives the codec for a record type, or nullptr (with a reason in *why)
  // when this daemon has none (DEFLATE without a compressdev).
  using CodecFor = std::function<PageCodec*(CodecKind, std::string* why)>;
  // in_place: see DecodedPacket::page_at.
  explicit PageDecoder(CodecFor codecs, bool in_place = false);

  // Decodes one message that starts with MULTIFD_BEGIN. Returns the empty
  // string, or why the message is refused (nothing of it may reach QEMU;
  // the session fails).
  std::string decode(std::span<const uint8_t> message, DecodedPacket& out);
  // This host's image of the VM, for PAGE_STORED records (nullptr: none;
  // such a record is then refused). Read-only, shared with other flows.
  void set_image(std::shared_ptr<const store::Image> img);
  // Logs every page this decoder hands back, with its bytes as they came
  // (compressed bodies as such), into the flow's capture for the page
  // store; repeats and PAGE_STORED pages by hash (nullptr: none).
  void set_capture(store::Capture* c) { capture_ = c; }
  // The session's record of what it delivered to its QEMU (the source's
  // unchanged filter is on): every page this decoder hands back is entered,
  // and PAGE_SAME records are checked against it; without one they are
  // refused. Shared by the session's decoders, on one worker.
  void set_delivered(DeliveredTable* t) { delivered_ = t; }
  // Back to the state of a new stream (its dictionary emptied, memory kept).
  void reset() {
    if (dict_) dict_->clear();
  }
  const PageStats& stats() const { return stats_; }

 private:
  // The image's page at a block's offset (cached: the block, found once
  // per packet), or nullptr.
  const store::Image::Page* image_page(const std::string& block, uint64_t offset,
                                       const store::Image::Block*& cached) const;
  CodecFor codecs_;
  bool in_place_;
  std::shared_ptr<const store::Image> image_;
  store::Image::CodecFor image_codecs_;
  store::Capture* capture_ = nullptr;
  DeliveredTable* delivered_ = nullptr;
  std::unique_ptr<DedupeDictionary> dict_;  // the receiver's slot ring (no index)
  // Every record's offset, big-endian, for MULTIFD_END's digest.
  std::unique_ptr<uint8_t[]> be_offsets_;
  PageStats stats_;
};

}  // namespace mm::pages
