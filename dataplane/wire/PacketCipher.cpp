#include "dataplane/wire/PacketCipher.hpp"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdexcept>

namespace mm::wire {

struct PacketCipher::ImbKeys {
  gcm_key_data key;
  mutable gcm_context_data ctx;
};

const char* to_string(CipherEngine e) {
  switch (e) {
    case CipherEngine::automatic: return "auto";
    case CipherEngine::openssl: return "openssl";
    case CipherEngine::ipsec_mb: return "ipsec-mb";
  }
  return "?";
}

bool parse_cipher_engine(std::string_view s, CipherEngine& out) {
  for (CipherEngine e : {CipherEngine::automatic, CipherEngine::openssl, CipherEngine::ipsec_mb}) {
    if (s == to_string(e)) {
      out = e;
      return true;
    }
  }
  return false;
}

std::array<uint8_t, kNonceSize> packet_nonce(Direction d, const Header& h) {
  std::array<uint8_t, kNonceSize> n;
  n[0] = uint8_t(d);
  n[1] = uint8_t(h.type);
  put_be16(n.data() + 2, h.stream);
  put_be32(n.data() + 4, h.seq);
  put_be32(n.data() + 8, h.auth);
  return n;
}

PacketCipher::PacketCipher(const CipherKey& key, Direction d, bool encrypt, CipherEngine engine)
    : dir_(d), encrypt_(encrypt) {
  // The key schedule is computed here once; seal/open pass only the nonce.
  if (engine != CipherEngine::openssl) {
    IMB_MGR* m = alloc_mb_mgr(0);
    IMB_ARCH arch = IMB_ARCH_NONE;
    // The no-AES-NI code is a software AES, slower than OpenSSL's.
    if (m) init_mb_mgr_auto(m, &arch);
    if (m && imb_get_errno(m) == 0 && arch >= IMB_ARCH_SSE) {
      imb_ = m;
      imb_keys_ = new ImbKeys{};
      IMB_AES256_GCM_PRE(imb_, key.data(), &imb_keys_->key);
      return;
    }
    if (m) free_mb_mgr(m);
    if (engine == CipherEngine::ipsec_mb) {
      throw std::runtime_error("intel-ipsec-mb has no AES-NI code for this CPU (cipher engine ipsec-mb)");
    }
  }
  ctx_ = EVP_CIPHER_CTX_new();
  if (!ctx_ || EVP_CipherInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, key.data(), nullptr, encrypt ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(ctx_);
    throw std::runtime_error("OpenSSL refused an AES-256-GCM context");
  }
}

PacketCipher::~PacketCipher() {
  EVP_CIPHER_CTX_free(ctx_);
  if (imb_keys_) {
    OPENSSL_cleanse(imb_keys_, sizeof *imb_keys_);  // the expanded key
    delete imb_keys_;
  }
  if (imb_) free_mb_mgr(imb_);
}

bool PacketCipher::seal(Header h, std::span<const uint8_t> plaintext, uint8_t* out,
                        std::span<uint8_t, kHeaderSize> header_out) const {
  if (!encrypt_) return false;
  h.len = uint32_t(plaintext.size() + kTagSize);
  h.flags |= flag::sealed;
  h.crc = 0;
  encode_header(h, header_out);
  const auto nonce = packet_nonce(dir_, h);
  uint8_t* tag = out + plaintext.size();
  if (imb_) {
    IMB_AES256_GCM_ENC(imb_, &imb_keys_->key, &imb_keys_->ctx, out, plaintext.data(), plaintext.size(),
                       nonce.data(), header_out.data(), kAadSize, tag, kTagSize);
    return true;
  }
  int n = 0;
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce.data(), 1) != 1 ||
      EVP_CipherUpdate(ctx_, nullptr, &n, header_out.data(), int(kAadSize)) != 1) {
    return false;
  }
  if (!plaintext.empty() && EVP_CipherUpdate(ctx_, out, &n, plaintext.data(), int(plaintext.size())) != 1) {
    return false;
  }
  if (EVP_CipherFinal_ex(ctx_, tag, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, int(kTagSize), tag) != 1) {
    return false;
  }
  return true;
}

bool PacketCipher::open(const Header& h, std::span<const uint8_t> payload, uint8_t* out) const {
  if (encrypt_ || !(h.flags & flag::sealed) || payload.size() < kTagSize) return false;
  // The additional data is bytes 0..kAadSize of the header: the crc field
  // is not part of it.
  std::array<uint8_t, kHeaderSize> aad;
  encode_header(h, aad);
  const auto nonce = packet_nonce(dir_, h);
  const size_t clen = payload.size() - kTagSize;
  if (imb_) {
    std::array<uint8_t, kTagSize> tag;
    IMB_AES256_GCM_DEC(imb_, &imb_keys_->key, &imb_keys_->ctx, out, payload.data(), clen, nonce.data(), aad.data(),
                       kAadSize, tag.data(), kTagSize);
    return CRYPTO_memcmp(tag.data(), payload.data() + clen, kTagSize) == 0;
  }
  int n = 0;
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce.data(), 0) != 1 ||
      EVP_CipherUpdate(ctx_, nullptr, &n, aad.data(), int(kAadSize)) != 1) {
    return false;
  }
  if (clen && EVP_CipherUpdate(ctx_, out, &n, payload.data(), int(clen)) != 1) return false;
  // OpenSSL takes the expected tag as non-const; it only reads it.
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, int(kTagSize), const_cast<uint8_t*>(payload.data() + clen)) != 1) {
    return false;
  }
  return EVP_CipherFinal_ex(ctx_, out + clen, &n) == 1;
}

void ReplayWindow::mark(uint32_t n) {
  if (!any_ || n > top_) {
    // Bits of the numbers the window slides over belong to numbers kSpan
    // older: cleared (all of them when it jumps a whole span).
    const uint32_t from = any_ ? top_ + 1 : 0;
    if (!any_ || n - from >= kSpan) {
      bits_.fill(0);
    } else {
      for (uint32_t k = from; k != n + 1; ++k) bits_[(k / 64) % kWords] &= ~(uint64_t(1) << (k % 64));
    }
    top_ = n;
    any_ = true;
  }
  bits_[(n / 64) % kWords] |= uint64_t(1) << (n % 64);
}

}  // namespace mm::wire
