// MMP message records (dataplane/wire/MMP.md "Records") as a destination
// reads a reassembled message: RecordReader walks it until the end or the
// first error. Properties: each record read lies inside the message and
// re-encodes (RecordWriter) to exactly the bytes it was read from, and the
// same records written across segments (a send window's packet slots, the
// first input byte choosing their sizes) give the same bytes as written
// into one buffer. STORE_TABLE bodies go on to a PageTable being assembled
// (dataplane/store/PageTable.hpp): it refuses or takes each, never more
// pages than the chunks said.
#include <algorithm>
#include <cstring>
#include <vector>

#include "dataplane/store/PageTable.hpp"
#include "dataplane/wire/Records.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm::wire;

namespace {

bool put(RecordWriter& w, const Record& r) {
  switch (r.type) {
    case RecordType::bytes:
      return w.put_bytes(r.body);
    case RecordType::sync:
      return w.put_sync();
    case RecordType::fin:
      return w.put_fin();
    case RecordType::multifd_begin:
      return w.put_multifd_begin(r.begin);
    case RecordType::multifd_end:
      return w.put_multifd_end(r.end);
    case RecordType::page_zero:
      return w.put_page_zero(r.page);
    case RecordType::page_same:
      return w.put_page_same(r.page, r.hash);
    case RecordType::page_raw:
      return w.put_page_raw(r.page, r.hash, r.body.data());
    case RecordType::page_ref:
      return w.put_page_ref(r.page, r.hash, r.slot);
    case RecordType::page_lz4:
    case RecordType::page_zstd:
    case RecordType::page_deflate:
      return w.put_page_compressed(r.type, r.page, r.hash, r.body);
    case RecordType::page_stored:
      return w.put_page_stored(r.page, r.hash, r.hash_hi);
    case RecordType::page_delta:
      return w.put_page_delta(r.page, r.hash, r.slot, r.body);
    case RecordType::store_table:
      return w.put_store_table(r.body);
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t seg_mode = data[0];
  const std::span<const uint8_t> msg(data + 1, size - 1);
  RecordReader reader(msg);
  Record r;
  std::vector<uint8_t> one(msg.size() + 16);
  RecordWriter w(one);
  // Three segments whose sizes come from the mode byte; the last takes the rest.
  std::vector<uint8_t> seg_store(msg.size() + 16);
  const size_t a = std::min(seg_store.size(), size_t(seg_mode & 0x0f) * 37 + 1);
  const size_t b = std::min(seg_store.size() - a, size_t(seg_mode >> 4) * 301 + 1);
  std::span<uint8_t> segs[3] = {std::span(seg_store).first(a), std::span(seg_store).subspan(a, b),
                                std::span(seg_store).subspan(a + b)};
  RecordWriter ws(std::span<const std::span<uint8_t>>(segs, 3));
  size_t before = 0;
  bool segmented_ok = true;
  mm::store::PageTable table;
  bool table_ok = true;
  for (RecordError e; (e = reader.next(r)) == RecordError::ok;) {
    const size_t after = reader.offset();
    MM_FUZZ_CHECK(after > before && after <= msg.size());
    if (!r.body.empty()) {
      MM_FUZZ_CHECK(r.body.data() >= msg.data() + before &&
                    r.body.data() + r.body.size() <= msg.data() + after);
    }
    const size_t w0 = w.size();
    MM_FUZZ_CHECK(put(w, r));
    MM_FUZZ_CHECK(w.size() - w0 == after - before);
    MM_FUZZ_CHECK(std::memcmp(one.data() + w0, msg.data() + before, after - before) == 0);
    if (segmented_ok) segmented_ok = put(ws, r);
    if (r.type == RecordType::store_table && table_ok) {
      table_ok = table.add(r.body).empty();
      for (const auto& blk : table.blocks()) MM_FUZZ_CHECK(blk.hash.size() <= mm::store::PageTable::kMaxBlockPages);
    }
    before = after;
  }
  if (segmented_ok) {
    MM_FUZZ_CHECK(ws.size() == w.size());
    MM_FUZZ_CHECK(std::memcmp(seg_store.data(), one.data(), w.size()) == 0);
  }
  return 0;
}
