// QEMU 7.2 multifd wire structures (QEMU's migration/multifd.h): the 64-byte
// MultiFDInit_t that opens each channel and the MultiFDPacket_t header
// (320 bytes + 8 per page slot) before each packet's pages. Parsing
// validates everything a peer could get wrong; encoding rebuilds headers at
// the destination. Pure code: unit-tested and fuzzed without QEMU.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mm::qemu {

inline constexpr uint32_t kMultifdVersion = 1;
inline constexpr size_t kMultifdInitSize = 64;
inline constexpr size_t kMultifdHeaderFixed = 320;   // up to and including ramblock[256]
inline constexpr size_t kRamblockNameSize = 256;
inline constexpr uint32_t kMultifdMaxPagesAlloc = 1024;  // 7.2 uses 128 (512 KiB / 4 KiB)
inline constexpr uint32_t kTargetPageSize = 4096;

namespace multifd_flag {
inline constexpr uint32_t sync = 0x1;
inline constexpr uint32_t zlib = 0x2;
inline constexpr uint32_t zstd = 0x4;
}  // namespace multifd_flag

enum class MultifdError : uint8_t {
  ok = 0,
  need_more,          // not enough bytes yet (not an error)
  bad_magic,
  bad_version,
  bad_pages_alloc,    // zero or beyond kMultifdMaxPagesAlloc
  bad_page_count,     // normal pages > pages_alloc
  bad_ramblock,       // name not NUL-terminated, or empty with pages
  bad_offset,         // an offset not page-aligned
  bad_payload_size,   // next_packet_size disagrees with the page count
};
std::string_view to_string(MultifdError e);

struct MultifdInit {
  std::array<uint8_t, 16> uuid{};
  uint8_t id = 0;
};

// The fixed fields of a MultiFDPacket header, and what follows from them.
struct MultifdHeaderFields {
  uint32_t flags = 0;
  uint32_t pages_alloc = 0;
  uint32_t normal_pages = 0;
  uint32_t next_packet_size = 0;
  uint64_t packet_num = 0;

  size_t header_size() const { return kMultifdHeaderFixed + 8 * size_t(pages_alloc); }
  // Bytes that follow the header. QEMU 7.2 sends and reads a payload only
  // for packets with pages; a SYNC packet without pages carries a stale
  // next_packet_size (left from the channel's previous packet) and no
  // payload (seen on real channels: tests/e2e/test_multifd_capture.py).
  size_t payload_size() const { return normal_pages ? next_packet_size : 0; }
  bool compressed() const { return flags & (multifd_flag::zlib | multifd_flag::zstd); }
};

struct MultifdPacketHeader : MultifdHeaderFields {
  std::string ramblock;
  std::vector<uint64_t> offsets;  // normal_pages entries
};

// One packet header as it lies in the input, nothing copied (the source's
// reader: no allocation per packet). Valid while the input is.
struct MultifdHeaderView : MultifdHeaderFields {
  std::string_view ramblock;
  const uint8_t* offsets_be = nullptr;  // normal_pages offsets, big-endian, as QEMU wrote them
};

// What a rebuilt QEMU 7.2 packet takes at most: header with pages_alloc
// offsets, then as many pages.
inline constexpr size_t rebuilt_bound(uint32_t pages_alloc) {
  return kMultifdHeaderFixed + 8 * size_t(pages_alloc) + size_t(pages_alloc) * kTargetPageSize;
}
inline constexpr size_t kRebuiltMax = rebuilt_bound(kMultifdMaxPagesAlloc);

MultifdError parse_multifd_init(std::span<const uint8_t> in, MultifdInit& out);
void encode_multifd_init(const MultifdInit& in, std::span<uint8_t, kMultifdInitSize> out);

// Bytes the header at the start of `in` occupies, from its pages_alloc
// field: need_more until 16 bytes are there.
MultifdError multifd_header_size(std::span<const uint8_t> in, size_t& size);
// Parses and validates one header (in must hold header_size() bytes).
MultifdError parse_multifd_header(std::span<const uint8_t> in, MultifdPacketHeader& out);
// The same checks, without copying anything out of `in`.
MultifdError parse_multifd_header(std::span<const uint8_t> in, MultifdHeaderView& out);
// Writes the header for `h` (offsets beyond normal_pages are zero), as
// QEMU's destination expects it.
std::vector<uint8_t> encode_multifd_header(const MultifdPacketHeader& h);
// The same into `out`, which must hold h.header_size() bytes, with
// `offsets` as the page list (h.offsets_be is not read); no allocation.
void encode_multifd_header(const MultifdHeaderView& h, std::span<const uint64_t> offsets, std::span<uint8_t> out);

}  // namespace mm::qemu
