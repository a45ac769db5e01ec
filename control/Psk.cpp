#include "control/Psk.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace mm::control {

Bytes load_key_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("key file " + path + " does not exist");
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("key file " + path + " is not a regular file");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    throw std::runtime_error("key file " + path + " is accessible by group or others (mode " + mode +
                             "); chmod 600 it");
  }
  std::ifstream in(path, std::ios::binary);
  Bytes key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.size() < 32) {
    throw std::runtime_error("key file " + path + " holds " + std::to_string(key.size()) +
                             " bytes; at least 32 are needed (e.g. head -c 32 /dev/urandom | xxd -p -c 64)");
  }
  return key;
}

Bytes hmac_sha256(const Bytes& key, const std::string& data) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const uint8_t*>(data.data()),
            data.size(), out.data(), &len)) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  out.resize(len);
  return out;
}

std::string to_hex(const Bytes& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t x : b) {
    s += d[x >> 4];
    s += d[x & 15];
  }
  return s;
}

wire::AuthSecret derive_auth_secret(const Bytes& session_key) {
  wire::AuthSecret s{};
  for (size_t off = 0, i = 1; off < s.size(); ++i) {
    const Bytes block = hmac_sha256(session_key, "mm-mmp-auth-" + std::to_string(i));
    for (size_t j = 0; j < block.size() && off < s.size(); ++j) s[off++] = block[j];
  }
  return s;
}

Bytes hkdf_sha256(const Bytes& secret, const std::string& salt, const std::string& info, size_t n) {
  Bytes out(n);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  size_t len = n;
  const bool ok = ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) == 1 &&
                  EVP_PKEY_CTX_set1_hkdf_salt(ctx, reinterpret_cast<const uint8_t*>(salt.data()), int(salt.size())) == 1 &&
                  EVP_PKEY_CTX_set1_hkdf_key(ctx, secret.data(), int(secret.size())) == 1 &&
                  EVP_PKEY_CTX_add1_hkdf_info(ctx, reinterpret_cast<const uint8_t*>(info.data()), int(info.size())) == 1 &&
                  EVP_PKEY_derive(ctx, out.data(), &len) == 1 && len == n;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) throw std::runtime_error("HKDF-SHA256 failed");
  return out;
}

wire::SessionKeys derive_session_keys(const Bytes& session_key, bool source) {
  // Labels: dataplane/wire/MMP.md "Encryption".
  auto key = [&](const char* label) {
    const Bytes b = hkdf_sha256(session_key, "memmotion mmp 3", label, wire::kCipherKeySize);
    wire::CipherKey k;
    std::copy(b.begin(), b.end(), k.begin());
    return k;
  };
  const wire::CipherKey s2d = key("source to destination"), d2s = key("destination to source");
  wire::SessionKeys k;
  k.tx = source ? s2d : d2s;
  k.rx = source ? d2s : s2d;
  k.tx_direction = source ? wire::Direction::source_to_destination : wire::Direction::destination_to_source;
  return k;
}

}  // namespace mm::control
