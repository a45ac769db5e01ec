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

// What the page pipeline sees of a codec.
class PageCodec {
 public:
  virtual ~PageCodec() = default;
  virtual CodecKind kind() const = 0;
  // Bytes written to out (cap >= kCompressBound), or 0: send the page RAW.
  virtual size_t compress(const uint8_t* page, uint8_t* out, size_t cap) = 0;
  // True only when `in` decodes to exactly one page.
  virtual bool decompress(const uint8_t* in, size_t n, uint8_t* page) = 0;
};

class Lz4Codec final : public PageCodec {
 public:
  Lz4Codec();
  CodecKind kind() const override { return CodecKind::lz4; }
  size_t compress(const uint8_t* page, uint8_t* out, size_t cap) override;
  bool decompress(const uint8_t* in, size_t n, uint8_t* page) override;

 private:
  std::vector<uint8_t> state_;  // LZ4 extState, reused for every page
};

class ZstdCodec final : public PageCodec {
 public:
  explicit ZstdCodec(int level = 1);
  ~ZstdCodec() override;
  ZstdCodec(const ZstdCodec&) = delete;
  ZstdCodec& operator=(const ZstdCodec&) = delete;
  CodecKind kind() const override { return CodecKind::zstd; }
  size_t compress(const uint8_t* page, uint8_t* out, size_t cap) override;
  bool decompress(const uint8_t* in, size_t n, uint8_t* page) override;

 private:
  ZSTD_CCtx_s* cctx_;
  ZSTD_DCtx_s* dctx_;
  int level_;
};

}  // namespace mm::pages
