// AES-256-GCM for the datagrams of an encrypted session (MMP.md
// "Encryption"): one key per direction, a 96-bit nonce made of direction,
// packet type, stream, seq and the sender's transmission number (carried in
// the header's `auth` field), the header as additional data and the 16-byte
// tag after the ciphertext. ReplayWindow refuses a transmission number seen
// before. Two engines give the same records: intel-ipsec-mb's GCM (the
// library DPDK's own AES-GCM crypto PMD runs on; AES-NI/AVX-512 VAES code
// about four times OpenSSL 3.0's here, perf/README.md "Encryption") where
// the CPU has AES-NI, OpenSSL's EVP otherwise or when asked for. No
// allocation per packet.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "dataplane/wire/Mmp.hpp"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
struct IMB_MGR;

namespace mm::wire {

inline constexpr size_t kCipherKeySize = 32;  // AES-256
inline constexpr size_t kNonceSize = 12;      // GCM's 96-bit IV
// Additional data: the header from magic to auth (flag::sealed included;
// the crc field, 0 on a sealed datagram, is left out).
inline constexpr size_t kAadSize = 28;
using CipherKey = std::array<uint8_t, kCipherKeySize>;

// Which way a key protects traffic; part of every nonce as well.
enum class Direction : uint8_t { source_to_destination = 0, destination_to_source = 1 };

// Which code computes AES-256-GCM. Both give byte-identical records.
enum class CipherEngine : uint8_t {
  automatic,  // ipsec-mb where the CPU has AES-NI, else OpenSSL
  openssl,    // OpenSSL's EVP (libcrypto)
  ipsec_mb,   // intel-ipsec-mb's GCM (refused where it has no AES-NI code)
};
const char* to_string(CipherEngine e);
// "auto", "openssl", "ipsec-mb"; false for anything else.
bool parse_cipher_engine(std::string_view s, CipherEngine& out);

// A session's keys as one side holds them: what it sends with, what it
// receives with, the direction it sends in, and the engine to use.
struct SessionKeys {
  CipherKey tx{}, rx{};
  Direction tx_direction = Direction::source_to_destination;
  CipherEngine engine = CipherEngine::automatic;
};

// MMP.md "Encryption": direction:1 type:1 stream:2 seq:4 transmission:4.
std::array<uint8_t, kNonceSize> packet_nonce(Direction d, const Header& h);

// One direction's AES-256-GCM context: the key is expanded once, each
// packet only sets its nonce. Not thread-safe (one per session side).
class PacketCipher {
 public:
  // Throws std::runtime_error when the engine cannot be set up (OpenSSL
  // refuses the context; ipsec-mb asked for on a CPU without AES-NI).
  PacketCipher(const CipherKey& key, Direction d, bool encrypt, CipherEngine engine = CipherEngine::automatic);
  ~PacketCipher();
  PacketCipher(const PacketCipher&) = delete;
  PacketCipher& operator=(const PacketCipher&) = delete;

  // Encrypts `plaintext` into `out` (plaintext.size() + kTagSize bytes:
  // ciphertext then tag; out may be plaintext.data()) and writes the
  // header: len = ciphertext + tag, auth = h.auth (the transmission
  // number the nonce uses), flag::sealed added, crc 0 (the tag covers the
  // datagram). False only when OpenSSL fails.
  bool seal(Header h, std::span<const uint8_t> plaintext, uint8_t* out,
            std::span<uint8_t, kHeaderSize> header_out) const;
  // Decrypts a datagram that passed decode_packet: `payload` is ciphertext
  // then tag; the plaintext (payload.size() - kTagSize bytes) goes to out.
  // False when the datagram is not sealed (a packet in the clear) or the
  // tag does not match (forged, damaged, another key): whatever was
  // written to out must not be used.
  bool open(const Header& h, std::span<const uint8_t> payload, uint8_t* out) const;

  Direction direction() const { return dir_; }
  // The engine in use (never automatic).
  CipherEngine engine() const { return imb_ ? CipherEngine::ipsec_mb : CipherEngine::openssl; }

 private:
  struct ImbKeys;  // ipsec-mb's expanded key and per-packet context
  EVP_CIPHER_CTX* ctx_ = nullptr;
  IMB_MGR* imb_ = nullptr;
  ImbKeys* imb_keys_ = nullptr;
  Direction dir_;
  bool encrypt_;
};

// Anti-replay over transmission numbers (RFC 4303 3.4.3's sliding window,
// as a ring of bits): a number is fresh if it is newer than any seen, or
// within the last kSpan and not seen. mark() only after the packet was
// authenticated, so forged packets cannot move the window.
class ReplayWindow {
 public:
  static constexpr uint32_t kSpan = 1024;
  bool fresh(uint32_t n) const {
    if (!any_ || n > top_) return true;
    if (top_ - n >= kSpan) return false;
    return !(bits_[(n / 64) % kWords] >> (n % 64) & 1);
  }
  void mark(uint32_t n);

 private:
  static constexpr uint32_t kWords = kSpan / 64;
  std::array<uint64_t, kWords> bits_{};
  uint32_t top_ = 0;  // highest number marked
  bool any_ = false;
};

}  // namespace mm::wire
