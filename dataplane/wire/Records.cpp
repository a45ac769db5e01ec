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
    case RecordType::multifd_begin:
    case RecordType::page_raw:
    case RecordType::page_zero:
    case RecordType::page_lz4:
    case RecordType::page_zstd:
    case RecordType::page_deflate:
    case RecordType::page_ref:
    case RecordType::page_same:
    case RecordType::multifd_end:
      // Page records arrive with the page-aware pipeline; a peer that sends
      // them before they were negotiated is lying about its capabilities.
      return RecordError::unsupported;
  }
  return RecordError::unknown_type;
}

}  // namespace mm::wire
