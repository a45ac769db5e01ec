// The MMP `auth` field (MMP.md "Auth tag"): the low 32 bits of a keyed hash of the
// header (auth and crc as zero) and the payload, with the session's key.
// The keyed hash is XXH3-64 with a 192-byte secret that the control plane
// derives from the peer channel's session key (HMAC-SHA256 expansion): it
// stops packets forged or replayed across sessions by anyone who does not
// hold the key, at line rate; it is not a substitute for encryption.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "dataplane/wire/Mmp.hpp"

namespace mm::wire {

inline constexpr size_t kAuthSecretSize = 192;
using AuthSecret = std::array<uint8_t, kAuthSecretSize>;

// Tag of a packet whose header fields are `h` (its auth and crc ignored).
uint32_t auth_tag(const AuthSecret& secret, Header h, std::span<const uint8_t> payload);

inline bool auth_ok(const AuthSecret& secret, const Header& h, std::span<const uint8_t> payload) {
  return auth_tag(secret, h, payload) == h.auth;
}

}  // namespace mm::wire
