#include "dataplane/qemu/MultifdPacket.hpp"

#include <algorithm>
#include <cstring>

#include "dataplane/qemu/ChannelClassifier.hpp"
#include "dataplane/wire/Mmp.hpp"

namespace mm::qemu {

using wire::get_be32;
using wire::get_be64;
using wire::put_be32;
using wire::put_be64;

std::string_view to_string(MultifdError e) {
  switch (e) {
    case MultifdError::ok: return "ok";
    case MultifdError::need_more: return "need more bytes";
    case MultifdError::bad_magic: return "bad multifd magic";
    case MultifdError::bad_version: return "unsupported multifd version";
    case MultifdError::bad_pages_alloc: return "bad pages_alloc";
    case MultifdError::bad_page_count: return "more normal pages than pages_alloc";
    case MultifdError::bad_ramblock: return "bad ramblock name";
    case MultifdError::bad_offset: return "page offset not page-aligned";
    case MultifdError::bad_payload_size: return "next_packet_size disagrees with the page count";
  }
  return "?";
}

MultifdError parse_multifd_init(std::span<const uint8_t> in, MultifdInit& out) {
  if (in.size() < kMultifdInitSize) return MultifdError::need_more;
  if (get_be32(in.data()) != kMultifdMagic) return MultifdError::bad_magic;
  if (get_be32(in.data() + 4) != kMultifdVersion) return MultifdError::bad_version;
  std::copy(in.begin() + 8, in.begin() + 24, out.uuid.begin());
  out.id = in[24];
  return MultifdError::ok;
}

void encode_multifd_init(const MultifdInit& in, std::span<uint8_t, kMultifdInitSize> out) {
  std::fill(out.begin(), out.end(), 0);
  put_be32(out.data(), kMultifdMagic);
  put_be32(out.data() + 4, kMultifdVersion);
  std::copy(in.uuid.begin(), in.uuid.end(), out.begin() + 8);
  out[24] = in.id;
}

MultifdError multifd_header_size(std::span<const uint8_t> in, size_t& size) {
  if (in.size() < 16) return MultifdError::need_more;
  if (get_be32(in.data()) != kMultifdMagic) return MultifdError::bad_magic;
  if (get_be32(in.data() + 4) != kMultifdVersion) return MultifdError::bad_version;
  const uint32_t alloc = get_be32(in.data() + 12);
  if (alloc == 0 || alloc > kMultifdMaxPagesAlloc) return MultifdError::bad_pages_alloc;
  size = kMultifdHeaderFixed + 8 * size_t(alloc);
  return MultifdError::ok;
}

MultifdError parse_multifd_header(std::span<const uint8_t> in, MultifdHeaderView& h) {
  size_t size = 0;
  if (const MultifdError e = multifd_header_size(in, size); e != MultifdError::ok) return e;
  if (in.size() < size) return MultifdError::need_more;
  const uint8_t* p = in.data();
  h.flags = get_be32(p + 8);
  h.pages_alloc = get_be32(p + 12);
  h.normal_pages = get_be32(p + 16);
  h.next_packet_size = get_be32(p + 20);
  h.packet_num = get_be64(p + 24);
  if (h.normal_pages > h.pages_alloc) return MultifdError::bad_page_count;
  const char* name = reinterpret_cast<const char*>(p + 64);
  const size_t len = strnlen(name, kRamblockNameSize);
  if (len == kRamblockNameSize || (len == 0 && h.normal_pages > 0)) return MultifdError::bad_ramblock;
  h.ramblock = std::string_view(name, len);
  // Uncompressed packets with pages carry exactly their pages; compressed
  // ones an opaque stream (passed through, so only bounded here); packets
  // without pages carry nothing, whatever next_packet_size says.
  if (h.normal_pages > 0 && !h.compressed() &&
      uint64_t(h.next_packet_size) != uint64_t(h.normal_pages) * kTargetPageSize) {
    return MultifdError::bad_payload_size;
  }
  if (h.compressed() && h.next_packet_size > uint64_t(h.pages_alloc) * kTargetPageSize * 2) {
    return MultifdError::bad_payload_size;
  }
  h.offsets_be = p + kMultifdHeaderFixed;
  for (uint32_t i = 0; i < h.normal_pages; ++i) {
    if (get_be64(h.offsets_be + 8 * size_t(i)) % kTargetPageSize != 0) return MultifdError::bad_offset;
  }
  return MultifdError::ok;
}

MultifdError parse_multifd_header(std::span<const uint8_t> in, MultifdPacketHeader& h) {
  MultifdHeaderView v;
  const MultifdError e = parse_multifd_header(in, v);
  if (e != MultifdError::ok && e != MultifdError::bad_offset) return e;
  static_cast<MultifdHeaderFields&>(h) = v;
  h.ramblock.assign(v.ramblock);
  h.offsets.resize(v.normal_pages);
  for (uint32_t i = 0; i < v.normal_pages; ++i) h.offsets[i] = get_be64(v.offsets_be + 8 * size_t(i));
  return e;
}

void encode_multifd_header(const MultifdHeaderView& h, std::span<const uint64_t> offsets, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  std::memset(p, 0, h.header_size());
  put_be32(p, kMultifdMagic);
  put_be32(p + 4, kMultifdVersion);
  put_be32(p + 8, h.flags);
  put_be32(p + 12, h.pages_alloc);
  put_be32(p + 16, h.normal_pages);
  put_be32(p + 20, h.next_packet_size);
  put_be64(p + 24, h.packet_num);
  if (!h.ramblock.empty()) {  // (a SYNC without pages names no block: no memcpy from nullptr)
    std::memcpy(p + 64, h.ramblock.data(), std::min(h.ramblock.size(), kRamblockNameSize - 1));
  }
  for (size_t i = 0; i < offsets.size() && i < h.pages_alloc; ++i) {
    put_be64(p + kMultifdHeaderFixed + 8 * i, offsets[i]);
  }
}

std::vector<uint8_t> encode_multifd_header(const MultifdPacketHeader& h) {
  std::vector<uint8_t> out(h.header_size(), 0);
  MultifdHeaderView v;
  static_cast<MultifdHeaderFields&>(v) = h;
  v.ramblock = h.ramblock;
  encode_multifd_header(v, h.offsets, out);
  return out;
}

}  // namespace mm::qemu
