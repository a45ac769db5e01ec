// MMP message records (WIRE.md "Messages and records"): the writer appends
// records to a message buffer, the reader walks a reassembled message and
// rejects anything truncated, oversized or unknown.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
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
};

// Bytes a BYTES record costs besides its data: code (1) + len (4).
inline constexpr size_t kBytesRecordOverhead = 5;

struct Record {
  RecordType type = RecordType::bytes;
  std::span<const uint8_t> body;  // BYTES: the opaque stream bytes
};

enum class RecordError : uint8_t {
  ok = 0,
  end,          // no more records (not an error)
  truncated,    // a record runs past the end of the message
  unknown_type, // code not defined by WIRE.md
  unsupported,  // defined by WIRE.md but not negotiated in this version
  bad_length,   // a length field that cannot be right
};
std::string_view to_string(RecordError e);

// Appends records into a caller-owned buffer. Each put_* returns false and
// writes nothing when the record does not fit.
class RecordWriter {
 public:
  explicit RecordWriter(std::span<uint8_t> buffer) : buf_(buffer) {}
  bool put_bytes(std::span<const uint8_t> data);
  // Writes a BYTES header for `n` bytes the caller places right after it (for
  // reading a socket straight into the message). Returns the span to fill.
  std::span<uint8_t> put_bytes_header(size_t n);
  bool put_sync();
  bool put_fin();
  size_t size() const { return used_; }
  size_t room() const { return buf_.size() - used_; }

 private:
  std::span<uint8_t> buf_;
  size_t used_ = 0;
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
