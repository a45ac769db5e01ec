#include "dataplane/pages/Codecs.hpp"

#include <lz4.h>
#include <zstd.h>

#include <stdexcept>

namespace mm::pages {

std::string_view to_string(CodecKind k) {
  switch (k) {
    case CodecKind::raw: return "raw";
    case CodecKind::lz4: return "lz4";
    case CodecKind::zstd: return "zstd";
    case CodecKind::deflate: return "deflate";
  }
  return "?";
}

Lz4Codec::Lz4Codec() : state_(size_t(LZ4_sizeofState())) {}

size_t Lz4Codec::compress(const uint8_t* page, uint8_t* out, size_t cap) {
  const int n = LZ4_compress_fast_extState(state_.data(), reinterpret_cast<const char*>(page),
                                           reinterpret_cast<char*>(out), int(kPageSize),
                                           int(std::min(cap, kWorthwhile)), 1);
  return n > 0 ? size_t(n) : 0;  // 0: did not fit in kWorthwhile
}

bool Lz4Codec::decompress(const uint8_t* in, size_t n, uint8_t* page) {
  const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(in), reinterpret_cast<char*>(page),
                                    int(n), int(kPageSize));
  return r == int(kPageSize);
}

ZstdCodec::ZstdCodec(int level) : cctx_(ZSTD_createCCtx()), dctx_(ZSTD_createDCtx()), level_(level) {
  if (!cctx_ || !dctx_) throw std::runtime_error("zstd: cannot create contexts");
}

ZstdCodec::~ZstdCodec() {
  ZSTD_freeCCtx(cctx_);
  ZSTD_freeDCtx(dctx_);
}

size_t ZstdCodec::compress(const uint8_t* page, uint8_t* out, size_t cap) {
  const size_t n = ZSTD_compressCCtx(cctx_, out, cap, page, kPageSize, level_);
  if (ZSTD_isError(n) || n > kWorthwhile) return 0;
  return n;
}

bool ZstdCodec::decompress(const uint8_t* in, size_t n, uint8_t* page) {
  const size_t r = ZSTD_decompressDCtx(dctx_, page, kPageSize, in, n);
  return !ZSTD_isError(r) && r == kPageSize;
}

}  // namespace mm::pages
