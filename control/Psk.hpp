// Pre-shared key for the peer channel: loading it safely, HKDF and HMAC,
// and the per-session secrets MMP derives from the session key the peer
// channel's TLS exports (AES-256-GCM keys, or the keyed-XXH3 tag secret).
// OpenSSL underneath.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/wire/AuthTag.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace mm::control {

using Bytes = std::vector<uint8_t>;

// Reads the key file: at least 32 bytes (trailing whitespace dropped), a
// regular file that neither group nor others may read or write. Throws
// std::runtime_error naming the file and the problem.
Bytes load_key_file(const std::string& path);

Bytes hmac_sha256(const Bytes& key, const std::string& data);
std::string to_hex(const Bytes& b);

// HMAC-SHA256 counter-mode expansion of a session key into the MMP auth
// secret.
wire::AuthSecret derive_auth_secret(const Bytes& session_key);

// HKDF-SHA256 (RFC 5869) of `secret` (`salt` may be empty) into `n` bytes
// for `info`.
Bytes hkdf_sha256(const Bytes& secret, const std::string& salt, const std::string& info, size_t n);

// The AES-256-GCM keys of an encrypted session (dataplane/wire/MMP.md
// "Encryption"): one per direction, HKDF-SHA256 of the session key; the
// source sends with the source-to-destination key, the destination with
// the other.
wire::SessionKeys derive_session_keys(const Bytes& session_key, bool source);

}  // namespace mm::control
