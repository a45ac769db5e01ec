#include "dataplane/wire/Records.hpp"

#include <algorithm>
#include <cstring>

#include "dataplane/wire/Mmp.hpp"

namespace mm::wire {

std::string_view to_string(RecordError e) {
  switch (e) {
    case RecordError::ok: return "ok";
    case RecordError::end: return "end";
    case RecordError::truncated: return "truncated record";
    case RecordError::unknown_type: return "unknown record type";
    case RecordError::unsupported: return "record type not supported by this version";
    case RecordError::bad_length: return "bad record length";
    case RecordError::bad_page: return "page offset not page-aligned";
  }
  return "unknown";
}

RecordWriter::RecordWriter(std::span<const std::span<uint8_t>> segments) : segs_(segments) {
  for (const auto& seg : segments) cap_ += seg.size();
}

uint8_t* RecordWriter::contiguous(size_t n) {
  while (seg_ < segments() && seg_used_ == segment(seg_).size()) {
    ++seg_;
    seg_used_ = 0;
  }
  if (seg_ == segments() || segment(seg_).size() - seg_used_ < n) return nullptr;
  return segment(seg_).data() + seg_used_;
}

void RecordWriter::append(const uint8_t* p, size_t n) {
  used_ += n;
  while (n > 0) {
    const std::span<uint8_t> cur = segment(seg_);
    if (seg_used_ == cur.size()) {
      ++seg_;
      seg_used_ = 0;
      continue;
    }
    const size_t k = std::min(n, cur.size() - seg_used_);
    std::memcpy(cur.data() + seg_used_, p, k);
    seg_used_ += k;
    p += k;
    n -= k;
  }
}

bool RecordWriter::put(const uint8_t* head, size_t head_len, const uint8_t* body, size_t body_len) {
  if (room() < head_len + body_len) return false;
  if (uint8_t* p = contiguous(head_len + body_len)) {
    // The common case: the whole record fits the current segment.
    std::memcpy(p, head, head_len);
    if (body_len) std::memcpy(p + head_len, body, body_len);
    seg_used_ += head_len + body_len;
    used_ += head_len + body_len;
    return true;
  }
  append(head, head_len);
  if (body_len) append(body, body_len);
  return true;
}

std::span<uint8_t> RecordWriter::put_bytes_header(size_t n) {
  if (n == 0 || n > UINT32_MAX || room() < kBytesRecordOverhead + n) return {};
  uint8_t* p = contiguous(kBytesRecordOverhead + n);
  if (!p) return {};
  p[0] = uint8_t(RecordType::bytes);
  put_be32(p + 1, uint32_t(n));
  seg_used_ += kBytesRecordOverhead + n;
  used_ += kBytesRecordOverhead + n;
  return {p + kBytesRecordOverhead, n};
}

bool RecordWriter::put_bytes(std::span<const uint8_t> data) {
  if (data.empty() || data.size() > UINT32_MAX) return false;
  uint8_t h[kBytesRecordOverhead];
  h[0] = uint8_t(RecordType::bytes);
  put_be32(h + 1, uint32_t(data.size()));
  return put(h, sizeof h, data.data(), data.size());
}

bool RecordWriter::put_sync() {
  const uint8_t h = uint8_t(RecordType::sync);
  return put(&h, 1);
}

bool RecordWriter::put_fin() {
  const uint8_t h = uint8_t(RecordType::fin);
  return put(&h, 1);
}

bool RecordWriter::put_multifd_begin(const MultifdBegin& b) {
  const size_t n = b.ramblock.size();
  if (n > kMaxRamblockName) return false;
  uint8_t h[kMultifdBeginHead];
  h[0] = uint8_t(RecordType::multifd_begin);
  put_be32(h + 1, b.flags);
  put_be32(h + 5, b.pages_alloc);
  put_be64(h + 9, b.packet_num);
  put_be32(h + 17, b.dict_slots);
  h[21] = b.channels;
  h[22] = uint8_t(n);
  return put(h, sizeof h, reinterpret_cast<const uint8_t*>(b.ramblock.data()), n);
}

bool RecordWriter::put_multifd_end(const MultifdEnd& e) {
  uint8_t h[kMultifdEndRecordSize];
  h[0] = uint8_t(RecordType::multifd_end);
  put_be32(h + 1, e.pages);
  put_be64(h + 5, e.offsets_digest);
  return put(h, sizeof h);
}

namespace {
// The fixed part of a page record: code, page offset [, hash].
size_t page_head(uint8_t* h, RecordType t, uint64_t page) {
  h[0] = uint8_t(t);
  put_be64(h + 1, page);
  return 9;
}
}  // namespace

bool RecordWriter::put_page_zero(uint64_t page) {
  uint8_t h[kPageZeroRecordSize];
  return put(h, page_head(h, RecordType::page_zero, page));
}

bool RecordWriter::put_page_same(uint64_t page, uint64_t hash) {
  uint8_t h[kPageSameRecordSize];
  const size_t n = page_head(h, RecordType::page_same, page);
  put_be64(h + n, hash);
  return put(h, sizeof h);
}

bool RecordWriter::put_page_raw(uint64_t page, uint64_t hash, const uint8_t* bytes) {
  uint8_t h[17];
  page_head(h, RecordType::page_raw, page);
  put_be64(h + 9, hash);
  return put(h, sizeof h, bytes, kRecordPageSize);
}

bool RecordWriter::put_page_ref(uint64_t page, uint64_t hash, uint32_t slot) {
  uint8_t h[kPageRefRecordSize];
  page_head(h, RecordType::page_ref, page);
  put_be64(h + 9, hash);
  put_be32(h + 17, slot);
  return put(h, sizeof h);
}

bool RecordWriter::put_page_stored(uint64_t page, uint64_t hash_lo, uint64_t hash_hi) {
  uint8_t h[kPageStoredRecordSize];
  page_head(h, RecordType::page_stored, page);
  put_be64(h + 9, hash_lo);
  put_be64(h + 17, hash_hi);
  return put(h, sizeof h);
}

bool RecordWriter::put_page_delta(uint64_t page, uint64_t hash, uint32_t slot, std::span<const uint8_t> delta) {
  if (delta.empty() || delta.size() > kMaxDeltaBody) return false;
  uint8_t h[kPageDeltaOverhead];
  page_head(h, RecordType::page_delta, page);
  put_be64(h + 9, hash);
  put_be32(h + 17, slot);
  put_be16(h + 21, uint16_t(delta.size()));
  return put(h, sizeof h, delta.data(), delta.size());
}

bool RecordWriter::put_store_table(std::span<const uint8_t> body) {
  if (body.empty() || body.size() > UINT32_MAX) return false;
  uint8_t h[kStoreTableOverhead];
  h[0] = uint8_t(RecordType::store_table);
  put_be32(h + 1, uint32_t(body.size()));
  return put(h, sizeof h, body.data(), body.size());
}

bool RecordWriter::put_page_compressed(RecordType type, uint64_t page, uint64_t hash,
                                       std::span<const uint8_t> data) {
  if (data.empty() || data.size() > kMaxCompressedPage) return false;
  if (type != RecordType::page_lz4 && type != RecordType::page_zstd && type != RecordType::page_deflate) {
    return false;
  }
  uint8_t h[kPageCompressedOverhead];
  page_head(h, type, page);
  put_be64(h + 9, hash);
  put_be16(h + 17, uint16_t(data.size()));
  return put(h, sizeof h, data.data(), data.size());
}

RecordError RecordReader::next(Record& r) {
  if (pos_ == msg_.size()) return RecordError::end;
  const uint8_t* p = msg_.data() + pos_;
  const size_t left = msg_.size() - pos_;
  const uint8_t code = p[0];
  switch (RecordType(code)) {
    case RecordType::bytes:
    case RecordType::store_table: {
      if (left < kBytesRecordOverhead) return RecordError::truncated;
      const uint32_t n = get_be32(p + 1);
      if (n == 0) return RecordError::bad_length;
      if (n > left - kBytesRecordOverhead) return RecordError::truncated;
      r.type = RecordType(code);
      r.body = {p + kBytesRecordOverhead, n};
      pos_ += kBytesRecordOverhead + n;
      return RecordError::ok;
    }
    case RecordType::sync:
    case RecordType::fin:
      r.type = RecordType(code);
      r.body = {};
      pos_ += 1;
      return RecordError::ok;
    case RecordType::multifd_begin: {
      if (left < kMultifdBeginHead) return RecordError::truncated;
      const size_t n = p[kMultifdBeginHead - 1];
      if (left < kMultifdBeginHead + n) return RecordError::truncated;
      r.type = RecordType::multifd_begin;
      r.begin.flags = get_be32(p + 1);
      r.begin.pages_alloc = get_be32(p + 5);
      r.begin.packet_num = get_be64(p + 9);
      r.begin.dict_slots = get_be32(p + 17);
      r.begin.channels = p[21];
      r.begin.ramblock = {reinterpret_cast<const char*>(p + kMultifdBeginHead), n};
      r.body = {};
      pos_ += kMultifdBeginHead + n;
      return RecordError::ok;
    }
    case RecordType::multifd_end:
      if (left < kMultifdEndRecordSize) return RecordError::truncated;
      r.type = RecordType::multifd_end;
      r.end.pages = get_be32(p + 1);
      r.end.offsets_digest = get_be64(p + 5);
      r.body = {};
      pos_ += kMultifdEndRecordSize;
      return RecordError::ok;
    case RecordType::page_stored:
      if (left < kPageStoredRecordSize) return RecordError::truncated;
      r.type = RecordType::page_stored;
      r.page = get_be64(p + 1);
      if (r.page % kRecordPageSize != 0) return RecordError::bad_page;
      r.hash = get_be64(p + 9);
      r.hash_hi = get_be64(p + 17);
      r.slot = 0;
      r.body = {};
      pos_ += kPageStoredRecordSize;
      return RecordError::ok;
    case RecordType::page_delta: {
      if (left < kPageDeltaOverhead) return RecordError::truncated;
      const size_t dlen = get_be16(p + 21);
      if (dlen == 0 || dlen > kMaxDeltaBody) return RecordError::bad_length;
      if (left < kPageDeltaOverhead + dlen) return RecordError::truncated;
      r.type = RecordType::page_delta;
      r.page = get_be64(p + 1);
      if (r.page % kRecordPageSize != 0) return RecordError::bad_page;
      r.hash = get_be64(p + 9);
      r.hash_hi = 0;
      r.slot = get_be32(p + 17);
      r.body = {p + kPageDeltaOverhead, dlen};
      pos_ += kPageDeltaOverhead + dlen;
      return RecordError::ok;
    }
    case RecordType::page_zero:
    case RecordType::page_same:
    case RecordType::page_raw:
    case RecordType::page_ref:
    case RecordType::page_lz4:
    case RecordType::page_zstd:
    case RecordType::page_deflate: {
      const auto t = RecordType(code);
      const bool compressed =
          t == RecordType::page_lz4 || t == RecordType::page_zstd || t == RecordType::page_deflate;
      size_t size = kPageZeroRecordSize;
      if (t == RecordType::page_same) size = kPageSameRecordSize;
      if (t == RecordType::page_raw) size = kPageRawRecordSize;
      if (t == RecordType::page_ref) size = kPageRefRecordSize;
      if (compressed) {
        if (left < kPageCompressedOverhead) return RecordError::truncated;
        const size_t clen = get_be16(p + 17);
        if (clen == 0 || clen > kMaxCompressedPage) return RecordError::bad_length;
        size = kPageCompressedOverhead + clen;
      }
      if (left < size) return RecordError::truncated;
      r.type = t;
      r.page = get_be64(p + 1);
      if (r.page % kRecordPageSize != 0) return RecordError::bad_page;
      r.hash = size > kPageZeroRecordSize ? get_be64(p + 9) : 0;
      r.slot = t == RecordType::page_ref ? get_be32(p + 17) : 0;
      r.body = {};
      if (t == RecordType::page_raw) r.body = {p + 17, kRecordPageSize};
      if (compressed) r.body = {p + kPageCompressedOverhead, size - kPageCompressedOverhead};
      pos_ += size;
      return RecordError::ok;
    }
  }
  return RecordError::unknown_type;
}

}  // namespace mm::wire
