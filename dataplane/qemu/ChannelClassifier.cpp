#include "dataplane/qemu/ChannelClassifier.hpp"

#include <cstdio>

namespace mm::qemu {

ChannelKind classify_channel(std::span<const uint8_t> b) {
  if (b.size() < 4) return {};
  const uint32_t magic = (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
  if (magic == kQemuMagic) return {ChannelKind::main, 0};
  if (magic != kMultifdMagic) return {ChannelKind::unknown, 0};
  if (b.size() <= kMultifdIdOffset) return {};
  return {ChannelKind::multifd, b[kMultifdIdOffset]};
}

std::string describe_first_bytes(std::span<const uint8_t> b) {
  std::string s;
  for (size_t i = 0; i < b.size() && i < 8; ++i) {
    char x[4];
    std::snprintf(x, sizeof x, "%02x", b[i]);
    s += x;
  }
  return s;
}

}  // namespace mm::qemu
