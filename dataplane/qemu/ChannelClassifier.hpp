// Tells which QEMU migration channel a new connection is from its first
// bytes (QEMU-7.2-STREAM.md §2): the main channel starts with the
// "QEVM" magic, a multifd channel with MultiFDInit_t (magic 0x11223344,
// version, uuid[16], then the channel id).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace mm::qemu {

inline constexpr uint32_t kQemuMagic = 0x5145564d;     // "QEVM", main channel
inline constexpr uint32_t kMultifdMagic = 0x11223344;  // MultiFDInit_t.magic
inline constexpr size_t kMultifdIdOffset = 24;         // magic 4 + version 4 + uuid 16

struct ChannelKind {
  enum Type { need_more, main, multifd, unknown } type = need_more;
  uint8_t multifd_id = 0;
};

// Classifies from the bytes seen so far (peeked, not consumed).
ChannelKind classify_channel(std::span<const uint8_t> first_bytes);
std::string describe_first_bytes(std::span<const uint8_t> first_bytes);

}  // namespace mm::qemu
