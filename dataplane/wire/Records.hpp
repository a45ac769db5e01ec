// MMP message records (MMP.md "Records"): the writer appends
// records to a message buffer, the reader walks a reassembled message and
// rejects anything truncated, oversized or unknown.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace mm::wire {

enum class RecordType : uint8_t {
  bytes = 0x01,
  multifd_begin = 0x02,
  page_raw = 0x03,
  page_zero = 0x04,
  page_lz4 = 0x05,
  page_zstd = 0x06,
  page_deflate = 0x07,
  page_ref = 0x08,
  page_same = 0x09,
  multifd_end = 0x0A,
  sync = 0x0B,
  fin = 0x0C,
  store_table = 0x0D,  // destination -> source: part of the page table of the image it holds
  page_stored = 0x0E,  // the destination's image holds this page: no bytes
  page_delta = 0x0F,   // the page as changes to a dictionary slot's page (MMP version 5)
};

// Bytes a BYTES record costs besides its data: code (1) + len (4).
inline constexpr size_t kBytesRecordOverhead = 5;
inline constexpr size_t kRecordPageSize = 4096;
// Page records (MMP.md "Page records"): code + page:8 [+ hash:8] [...].
inline constexpr size_t kPageZeroRecordSize = 1 + 8;
// PAGE_SAME: code + page:8 + hash:8 (MMP version 6: the destination checks it).
inline constexpr size_t kPageSameRecordSize = 1 + 8 + 8;
inline constexpr size_t kPageRawRecordSize = 1 + 8 + 8 + kRecordPageSize;
inline constexpr size_t kPageRefRecordSize = 1 + 8 + 8 + 4;
inline constexpr size_t kPageCompressedOverhead = 1 + 8 + 8 + 2;
inline constexpr size_t kMultifdEndRecordSize = 1 + 4 + 8;
// MULTIFD_BEGIN before its RAM block name: code + flags:4 pages_alloc:4
// packet_num:8 dict_slots:4 channels:1 namelen:1.
inline constexpr size_t kMultifdBeginHead = 1 + 4 + 4 + 8 + 4 + 1 + 1;
inline constexpr size_t kFinRecordSize = 1;
// PAGE_STORED: code + page:8 + hash:8 (low 64 bits) + hash_hi:8.
inline constexpr size_t kPageStoredRecordSize = 1 + 8 + 8 + 8;
// PAGE_DELTA: code + page:8 + hash:8 + slot:4 + dlen:2, then dlen bytes.
inline constexpr size_t kPageDeltaOverhead = 1 + 8 + 8 + 4 + 2;
// PAGE_DELTA's slot for "the destination's image of the VM, this page"
// (warm re-migration; MMP.md "Delta").
inline constexpr uint32_t kDeltaImageSlot = 0xFFFFFFFF;
// Largest delta body: one run of a whole page (pages/PageDelta.hpp).
inline constexpr size_t kMaxDeltaBody = kRecordPageSize + 8;
// STORE_TABLE: code + len:4, then its body (dataplane/store/PageTable.hpp).
inline constexpr size_t kStoreTableOverhead = 5;
// Largest compressed body a page record may carry (never more than the
// page plus the codecs' worst-case framing).
inline constexpr size_t kMaxCompressedPage = kRecordPageSize + 512;
inline constexpr size_t kMaxRamblockName = 255;

// MULTIFD_BEGIN: the multifd packet header fields the destination needs to
// rebuild the packet QEMU sent (its page list comes from the page records).
struct MultifdBegin {
  uint32_t flags = 0;        // QEMU's packet flags (SYNC, ...)
  uint32_t pages_alloc = 0;  // QEMU's offset array size
  uint64_t packet_num = 0;
  uint32_t dict_slots = 0;   // the sender's dedupe dictionary size (0: no dedupe)
  std::string_view ramblock;
  // The multifd channels the sender's unchanged filter orders (MMP.md
  // "Unchanged pages"), streams 1 .. channels; 0: none, the destination
  // need not order this message against the other streams.
  uint8_t channels = 0;
};

// MULTIFD_END: how many page records the packet had and a digest of their
// page offsets in order, so a lost or reordered record cannot go unnoticed.
struct MultifdEnd {
  uint32_t pages = 0;
  uint64_t offsets_digest = 0;
};

struct Record {
  RecordType type = RecordType::bytes;
  std::span<const uint8_t> body;  // BYTES: the opaque stream bytes; RAW: the page;
                                  // LZ4/ZSTD/DEFLATE: the compressed page; DELTA: the changes
  uint64_t page = 0;              // page records: byte offset in the RAM block
  uint64_t hash = 0;              // RAW/compressed/REF/STORED/DELTA/SAME: low 64 bits of the page's XXH3-128
  uint64_t hash_hi = 0;           // STORED: the high 64 bits
  uint32_t slot = 0;              // REF, DELTA: dictionary slot
  MultifdBegin begin;             // MULTIFD_BEGIN
  MultifdEnd end;                 // MULTIFD_END
};

inline bool is_page_record(RecordType t) {
  return (t >= RecordType::page_raw && t <= RecordType::page_same) || t == RecordType::page_stored ||
         t == RecordType::page_delta;
}

enum class RecordError : uint8_t {
  ok = 0,
  end,          // no more records (not an error)
  truncated,    // a record runs past the end of the message
  unknown_type, // code not defined by MMP.md
  unsupported,  // defined by MMP.md but not negotiated in this version
  bad_length,   // a length field that cannot be right
  bad_page,     // a page offset that is not page-aligned
};
std::string_view to_string(RecordError e);

// Appends records into a caller-owned buffer, or into a list of buffers
// taken as one (a message written straight into a send window's packet
// slots, each its own NIC buffer: records then straddle slots as they
// would straddle packets). Each put_* returns false and writes nothing
// when the record does not fit.
class RecordWriter {
 public:
  explicit RecordWriter(std::span<uint8_t> buffer) : one_(buffer), cap_(buffer.size()) {}
  // segments: not copied; they must outlive the writer.
  explicit RecordWriter(std::span<const std::span<uint8_t>> segments);
  bool put_bytes(std::span<const uint8_t> data);
  // Writes a BYTES header for `n` bytes the caller places right after it (for
  // reading a socket straight into the message). Returns the span to fill,
  // empty when it does not fit or would straddle two segments.
  std::span<uint8_t> put_bytes_header(size_t n);
  bool put_sync();
  bool put_fin();
  bool put_multifd_begin(const MultifdBegin& b);
  bool put_multifd_end(const MultifdEnd& e);
  bool put_page_zero(uint64_t page);
  bool put_page_same(uint64_t page, uint64_t hash);
  bool put_page_raw(uint64_t page, uint64_t hash, const uint8_t* bytes);
  bool put_page_ref(uint64_t page, uint64_t hash, uint32_t slot);
  bool put_page_stored(uint64_t page, uint64_t hash_lo, uint64_t hash_hi);
  // delta: 1 .. kMaxDeltaBody bytes (pages/PageDelta.hpp), against `slot`.
  bool put_page_delta(uint64_t page, uint64_t hash, uint32_t slot, std::span<const uint8_t> delta);
  bool put_store_table(std::span<const uint8_t> body);
  // type: page_lz4, page_zstd or page_deflate.
  bool put_page_compressed(RecordType type, uint64_t page, uint64_t hash,
                           std::span<const uint8_t> data);
  size_t size() const { return used_; }
  size_t room() const { return cap_ - used_; }

 private:
  // Room for `n` bytes at the write position in one piece, or nullptr.
  uint8_t* contiguous(size_t n);
  // Appends a record of a head and an optional body (room checked).
  void append(const uint8_t* p, size_t n);
  bool put(const uint8_t* head, size_t head_len, const uint8_t* body = nullptr, size_t body_len = 0);

  size_t segments() const { return segs_.empty() ? 1 : segs_.size(); }
  std::span<uint8_t> segment(size_t k) const { return segs_.empty() ? one_ : segs_[k]; }

  std::span<uint8_t> one_;                    // one buffer, or
  std::span<const std::span<uint8_t>> segs_;  // ... these (not owned)
  size_t cap_ = 0;
  size_t used_ = 0;
  size_t seg_ = 0;       // segment being written
  size_t seg_used_ = 0;  // bytes of it written
};

class RecordReader {
 public:
  explicit RecordReader(std::span<const uint8_t> message) : msg_(message) {}
  // Reads the next record into r; returns ok, end, or the error that stops
  // the walk (the reader then stays at the bad record).
  RecordError next(Record& r);
  size_t offset() const { return pos_; }

 private:
  std::span<const uint8_t> msg_;
  size_t pos_ = 0;
};

}  // namespace mm::wire
