// Page codecs: LZ4 (the default: fastest), zstd (smaller, reused contexts)
// and DEFLATE through DPDK compressdev (CompressdevDeflate.hpp). Each
// compresses one 4 KiB page; compress() returns 0 when the result would not
// save enough to be worth a record (the page then goes RAW). decompress()
// accepts only input that yields exactly one page: a peer's corrupt or
// hostile bytes fail cleanly and never write past the page.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "dataplane/pages/Page.hpp"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace mm::pages {

enum class CodecKind : uint8_t { raw = 0, lz4 = 1, zstd = 2, deflate = 3 };
std::string_view to_string(CodecKind k);

// A compressed page must be at most this big, or RAW is cheaper overall
// (record header + decompression for under 1/16 saved).
inline constexpr size_t kWorthwhile = kPageSize - kPageSize / 16;
// Output buffers for compress() hold at least this much.
inline constexpr size_t kCompressBound = kPageSize + 512;

class Lz4Codec {
 public:
  Lz4Codec();
  size_t compress(const uint8_t* page, uint8_t* out, size_t cap);
  bool decompress(const uint8_t* in, size_t n, uint8_t* page);

 private:
  std::vector<uint8_t> state_;  // LZ4 extState, reused for every page
};

class ZstdCodec {
 public:
  explicit ZstdCodec(int level = 1);
  ~ZstdCodec();
  ZstdCodec(const ZstdCodec&) = delete;
  ZstdCodec& operator=(const ZstdCodec&) = delete;
  size_t compress(const uint8_t* page, uint8_t* out, size_t cap);
  bool decompress(const uint8_t* in, size_t n, uint8_t* page);

 private:
  ZSTD_CCtx_s* cctx_;
  ZSTD_DCtx_s* dctx_;
  int level_;
};

}  // namespace mm::pages
