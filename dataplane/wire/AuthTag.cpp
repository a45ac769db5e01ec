#include "dataplane/wire/AuthTag.hpp"

// The state on the stack (no allocation per packet) needs the static-linking API.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

namespace mm::wire {

uint32_t auth_tag(const AuthSecret& secret, Header h, std::span<const uint8_t> payload) {
  h.auth = 0;
  h.crc = 0;
  std::array<uint8_t, kHeaderSize> hdr;
  encode_header(h, hdr);
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_64bits_reset_withSecret(&state, secret.data(), secret.size());
  XXH3_64bits_update(&state, hdr.data(), hdr.size());
  if (!payload.empty()) XXH3_64bits_update(&state, payload.data(), payload.size());
  return uint32_t(XXH3_64bits_digest(&state));
}

}  // namespace mm::wire
