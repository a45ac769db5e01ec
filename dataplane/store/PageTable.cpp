#include "dataplane/store/PageTable.hpp"

#include <zstd.h>

#include <cstring>

namespace mm::store {

namespace {

void put_be(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i)));
}

uint64_t get_be(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

PageTable PageTable::of(const Image& img) {
  PageTable t;
  t.generation_ = img.info().generation;
  for (const Image::Block& b : img.blocks()) {
    Block out{b.name, std::vector<uint64_t>(b.pages.size(), 0), b.pages.size()};
    for (size_t i = 0; i < b.pages.size(); ++i) {
      if (b.pages[i].content != Content::none) out.hash[i] = b.pages[i].hash.lo;
    }
    t.blocks_.push_back(std::move(out));
  }
  t.complete_ = true;
  return t;
}

uint64_t PageTable::pages_held() const {
  uint64_t n = 0;
  for (const Block& b : blocks_) {
    for (uint64_t h : b.hash) n += h != 0;
  }
  return n;
}

std::vector<std::vector<uint8_t>> PageTable::encode() const {
  std::vector<std::vector<uint8_t>> out;
  std::vector<uint8_t> raw;
  // Each frame carries zstd's checksum: a damaged chunk is refused whole.
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  for (size_t bi = 0; bi < blocks_.size(); ++bi) {
    const Block& b = blocks_[bi];
    const uint64_t total = b.total;
    for (uint64_t first = 0; first < total || (total == 0 && first == 0); first += kChunkPages) {
      const uint32_t count = uint32_t(std::min<uint64_t>(kChunkPages, total - first));
      raw.resize(size_t(count) * 8);
      for (uint32_t i = 0; i < count; ++i) {
        const uint64_t h = b.hash[first + i];
        for (int k = 0; k < 8; ++k) raw[size_t(i) * 8 + size_t(k)] = uint8_t(h >> (8 * k));
      }
      std::vector<uint8_t> body;
      put_be(body, generation_, 8);
      const bool last = bi + 1 == blocks_.size() && first + count >= total;
      body.push_back(last ? 1 : 0);
      body.push_back(uint8_t(b.name.size()));
      body.insert(body.end(), b.name.begin(), b.name.end());
      put_be(body, first, 8);
      put_be(body, count, 4);
      put_be(body, total, 8);
      const size_t head = body.size();
      body.resize(head + ZSTD_compressBound(raw.size()));
      const size_t n = ZSTD_compress2(cctx, body.data() + head, body.size() - head, raw.data(), raw.size());
      body.resize(head + (ZSTD_isError(n) ? 0 : n));
      out.push_back(std::move(body));
      if (total == 0) break;
    }
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

std::string PageTable::add(std::span<const uint8_t> body) {
  if (complete_) return "STORE_TABLE after the table's last chunk";
  if (body.size() < 8 + 1 + 1) return "STORE_TABLE too short";
  const uint8_t* p = body.data();
  const uint64_t gen = get_be(p, 8);
  const bool last = p[8] & 1;
  const size_t namelen = p[9];
  if (namelen == 0) return "STORE_TABLE with an empty block name";
  if (body.size() < 10 + namelen + 20) return "STORE_TABLE too short";
  const std::string_view name(reinterpret_cast<const char*>(p + 10), namelen);
  const uint8_t* q = p + 10 + namelen;
  const uint64_t first = get_be(q, 8);
  const uint32_t count = uint32_t(get_be(q + 8, 4));
  const uint64_t total = get_be(q + 12, 8);
  const std::span<const uint8_t> frame = body.subspan(10 + namelen + 20);
  if (started_ && gen != generation_) return "STORE_TABLE chunks of two image generations";
  if (total > kMaxBlockPages) return "STORE_TABLE block of " + std::to_string(total) + " pages";
  if (count > kChunkPages || first > total || count > total - first) return "STORE_TABLE chunk outside its block";
  Block* b = blocks_.empty() ? nullptr : &blocks_.back();
  if (!b || b->name != name) {
    // A new block: the previous one must be whole, and named once only.
    if (b && next_ != b->total) return "STORE_TABLE block '" + b->name + "' ended early";
    if (block(name)) return "STORE_TABLE names block '" + std::string(name) + "' twice";
    if (blocks_.size() == kMaxBlocks) return "STORE_TABLE with more than 64 blocks";
    if (first != 0) return "STORE_TABLE block '" + std::string(name) + "' does not start at page 0";
    if (total > kMaxTablePages - pages_) return "STORE_TABLE of more than " + std::to_string(kMaxTablePages) + " pages";
    pages_ += total;
    blocks_.push_back({std::string(name), {}, total});
    b = &blocks_.back();
    next_ = 0;
  } else if (total != b->total) {
    return "STORE_TABLE block '" + b->name + "' changed its size";
  }
  if (first != next_) return "STORE_TABLE chunk out of order in block '" + b->name + "'";
  std::vector<uint8_t> raw(size_t(count) * 8);
  const size_t n = ZSTD_decompress(raw.data(), raw.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != raw.size()) return "STORE_TABLE chunk does not decompress to its page count";
  b->hash.resize(first + count);
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t h = 0;
    for (int k = 7; k >= 0; --k) h = (h << 8) | raw[size_t(i) * 8 + size_t(k)];
    b->hash[first + i] = h;
  }
  next_ = first + count;
  generation_ = gen;
  started_ = true;
  if (last) {
    if (next_ != b->total) return "STORE_TABLE's last chunk leaves block '" + b->name + "' short";
    complete_ = true;
  }
  return {};
}

}  // namespace mm::store
