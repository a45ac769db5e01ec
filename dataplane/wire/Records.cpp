#include "dataplane/wire/Records.hpp"

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

std::span<uint8_t> RecordWriter::put_bytes_header(size_t n) {
  if (n == 0 || n > UINT32_MAX || room() < kBytesRecordOverhead + n) return {};
  uint8_t* p = buf_.data() + used_;
  p[0] = uint8_t(RecordType::bytes);
  put_be32(p + 1, uint32_t(n));
  used_ += kBytesRecordOverhead + n;
  return {p + kBytesRecordOverhead, n};
}

bool RecordWriter::put_bytes(std::span<const uint8_t> data) {
  auto dst = put_bytes_header(data.size());
  if (dst.empty()) return false;
  std::memcpy(dst.data(), data.data(), data.size());
  return true;
}

bool RecordWriter::put_sync() {
  if (room() < 1) return false;
  buf_[used_++] = uint8_t(RecordType::sync);
  return true;
}

bool RecordWriter::put_fin() {
  if (room() < 1) return false;
  buf_[used_++] = uint8_t(RecordType::fin);
  return true;
}

bool RecordWriter::put_multifd_begin(const MultifdBegin& b) {
  const size_t n = b.ramblock.size();
  if (n > kMaxRamblockName || room() < 1 + 4 + 4 + 8 + 4 + 1 + n) return false;
  uint8_t* p = buf_.data() + used_;
  p[0] = uint8_t(RecordType::multifd_begin);
  put_be32(p + 1, b.flags);
  put_be32(p + 5, b.pages_alloc);
  put_be64(p + 9, b.packet_num);
  put_be32(p + 17, b.dict_slots);
  p[21] = uint8_t(n);
  std::memcpy(p + 22, b.ramblock.data(), n);
  used_ += 22 + n;
  return true;
}

bool RecordWriter::put_multifd_end(const MultifdEnd& e) {
  if (room() < kMultifdEndRecordSize) return false;
  uint8_t* p = buf_.data() + used_;
  p[0] = uint8_t(RecordType::multifd_end);
  put_be32(p + 1, e.pages);
  put_be64(p + 5, e.offsets_digest);
  used_ += kMultifdEndRecordSize;
  return true;
}

namespace {
uint8_t* page_head(std::span<uint8_t> buf, size_t& used, size_t size, RecordType t, uint64_t page) {
  if (buf.size() - used < size) return nullptr;
  uint8_t* p = buf.data() + used;
  p[0] = uint8_t(t);
  put_be64(p + 1, page);
  used += size;
  return p;
}
}  // namespace

bool RecordWriter::put_page_zero(uint64_t page) {
  return page_head(buf_, used_, kPageZeroRecordSize, RecordType::page_zero, page) != nullptr;
}

bool RecordWriter::put_page_same(uint64_t page) {
  return page_head(buf_, used_, kPageSameRecordSize, RecordType::page_same, page) != nullptr;
}

bool RecordWriter::put_page_raw(uint64_t page, uint64_t hash, const uint8_t* bytes) {
  uint8_t* p = page_head(buf_, used_, kPageRawRecordSize, RecordType::page_raw, page);
  if (!p) return false;
  put_be64(p + 9, hash);
  std::memcpy(p + 17, bytes, kRecordPageSize);
  return true;
}

bool RecordWriter::put_page_ref(uint64_t page, uint64_t hash, uint32_t slot) {
  uint8_t* p = page_head(buf_, used_, kPageRefRecordSize, RecordType::page_ref, page);
  if (!p) return false;
  put_be64(p + 9, hash);
  put_be32(p + 17, slot);
  return true;
}

bool RecordWriter::put_page_compressed(RecordType type, uint64_t page, uint64_t hash,
                                       std::span<const uint8_t> data) {
  if (data.empty() || data.size() > kMaxCompressedPage) return false;
  if (type != RecordType::page_lz4 && type != RecordType::page_zstd && type != RecordType::page_deflate) {
    return false;
  }
  uint8_t* p = page_head(buf_, used_, kPageCompressedOverhead + data.size(), type, page);
  if (!p) return false;
  put_be64(p + 9, hash);
  put_be16(p + 17, uint16_t(data.size()));
  std::memcpy(p + 19, data.data(), data.size());
  return true;
}

RecordError RecordReader::next(Record& r) {
  if (pos_ == msg_.size()) return RecordError::end;
  const uint8_t* p = msg_.data() + pos_;
  const size_t left = msg_.size() - pos_;
  const uint8_t code = p[0];
  switch (RecordType(code)) {
    case RecordType::bytes: {
      if (left < kBytesRecordOverhead) return RecordError::truncated;
      const uint32_t n = get_be32(p + 1);
      if (n == 0) return RecordError::bad_length;
      if (n > left - kBytesRecordOverhead) return RecordError::truncated;
      r.type = RecordType::bytes;
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
      if (left < 22) return RecordError::truncated;
      const size_t n = p[21];
      if (left < 22 + n) return RecordError::truncated;
      r.type = RecordType::multifd_begin;
      r.begin.flags = get_be32(p + 1);
      r.begin.pages_alloc = get_be32(p + 5);
      r.begin.packet_num = get_be64(p + 9);
      r.begin.dict_slots = get_be32(p + 17);
      r.begin.ramblock = {reinterpret_cast<const char*>(p + 22), n};
      r.body = {};
      pos_ += 22 + n;
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
