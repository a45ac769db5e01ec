#include "dataplane/store/Image.hpp"

#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>
#include <unordered_map>

namespace mm::store {

namespace {

// Where the bytes of a hash are, for pages logged as repeats of it.
struct Source {
  Loc at;
  uint16_t len;
  uint8_t capture;
  Content content;
};

}  // namespace

std::shared_ptr<Image> Image::merge(std::string vm, std::vector<std::unique_ptr<Capture>> captures, Budget& budget,
                                    std::string& why, const Image* prior) {
  if (captures.size() > 254) {
    why = "more than 254 captures";
    return nullptr;
  }
  std::shared_ptr<Image> img(new Image());
  img->info_.vm = std::move(vm);
  std::unordered_map<pages::PageHash, Source, pages::PageHashHasher> by_hash;
  // Per page the epoch of the write kept, and whether two writes claimed
  // the same epoch (QEMU never does that; the page is then not held).
  struct Chosen {
    uint32_t epoch = 0;
    bool any = false;
    bool ambiguous = false;
    uint8_t capture = 0;
    uint64_t entry = 0;
  };
  std::vector<std::vector<Chosen>> chosen;
  for (size_t ci = 0; ci < captures.size(); ++ci) {
    Capture& c = *captures[ci];
    if (c.broken()) {
      why = "a flow's capture ran out of budget for its log";
      return nullptr;
    }
    std::vector<uint16_t> map(c.blocks_.size());
    for (size_t b = 0; b < c.blocks_.size(); ++b) {
      size_t k = 0;
      while (k < img->blocks_.size() && img->blocks_[k].name != c.blocks_[b]) ++k;
      if (k == img->blocks_.size()) {
        img->blocks_.push_back({c.blocks_[b], {}});
        chosen.emplace_back();
      }
      map[b] = uint16_t(k);
    }
    for (uint64_t i = 0; i < c.entries(); ++i) {
      const Capture::Entry& e = c.entry(i);
      if (e.block >= map.size()) {
        why = "a capture names an unknown RAM block";
        return nullptr;
      }
      auto& v = chosen[map[e.block]];
      if (e.index >= v.size()) v.resize(e.index + 1);
      Chosen& ch = v[e.index];
      if (!ch.any || e.epoch > ch.epoch || (e.epoch == ch.epoch && ch.capture == ci)) {
        // Within one flow a later entry of the same epoch is a later write
        // (an ambiguity with another flow stays).
        const bool still = ch.any && ch.ambiguous && e.epoch == ch.epoch;
        ch = {e.epoch, true, still, uint8_t(ci), i};
      } else if (e.epoch == ch.epoch && !(e.hash == captures[ch.capture]->entry(ch.entry).hash)) {
        // Two flows wrote it in one epoch with other bytes (QEMU 7.2 may
        // repeat a page at a packet boundary): which the destination
        // applied last is unknown. The same bytes twice are fine.
        ch.ambiguous = true;
      }
      if (e.content != Content::none && e.content != Content::ref && e.content != Content::zero) {
        by_hash.try_emplace(e.hash, Source{e.at, e.len, uint8_t(ci), e.content});
      }
    }
  }
  uint64_t pages_total = 0;
  for (auto& v : chosen) pages_total += v.size();
  img->table_bytes_ = pages_total * sizeof(Page);
  if (!budget.take(img->table_bytes_)) {
    img->table_bytes_ = 0;
    why = "the image's page table does not fit the store budget";
    return nullptr;
  }
  img->budget_ = &budget;
  img->info_.pages = pages_total;
  // The arena of bytes carried over from the prior image comes after the
  // captures' (Page::arena indexes them in that order).
  const uint8_t carried_index = uint8_t(captures.size());
  if (prior) img->carried_ = std::make_unique<Arena>(budget, Backing::memory);
  for (size_t b = 0; b < img->blocks_.size(); ++b) {
    auto& pages = img->blocks_[b].pages;
    const Block* old = prior ? prior->block(img->blocks_[b].name) : nullptr;
    pages.resize(chosen[b].size());
    for (size_t idx = 0; idx < pages.size(); ++idx) {
      const Chosen& ch = chosen[b][idx];
      Page& p = pages[idx];
      if (!ch.any || ch.ambiguous) continue;
      const Capture::Entry& e = captures[ch.capture]->entry(ch.entry);
      p.hash = e.hash;
      switch (e.content) {
        case Content::none: break;
        case Content::zero: p.content = Content::zero; break;
        case Content::ref: {
          auto it = by_hash.find(e.hash);
          if (it != by_hash.end()) {
            p.at = it->second.at;
            p.len = it->second.len;
            p.arena = it->second.capture;
            p.content = it->second.content;
          } else if (old && idx < old->pages.size() && old->pages[idx].content != Content::none &&
                     old->pages[idx].hash == e.hash) {
            const Page& q = old->pages[idx];
            if (q.content == Content::zero) {
              p.content = Content::zero;
            } else if (img->carried_->append({prior->arenas_[q.arena]->at(q.at), q.len}, p.at)) {
              p.len = q.len;
              p.arena = carried_index;
              p.content = q.content;
            }
            if (p.content != Content::none) ++img->info_.carried;
          }
          break;
        }
        default:
          p.at = e.at;
          p.len = e.len;
          p.arena = ch.capture;
          p.content = e.content;
      }
      if (p.content != Content::none) ++img->info_.pages_held;
    }
  }
  for (auto& c : captures) c->log_.reset();  // the log's budget goes back
  img->captures_ = std::move(captures);
  for (auto& c : img->captures_) img->arenas_.push_back(&c->bytes_);
  if (img->carried_) img->arenas_.push_back(img->carried_.get());
  std::random_device rd;
  img->info_.generation = (uint64_t(rd()) << 32) ^ rd();
  img->info_.made_unix_ms = uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  img->info_.bytes = img->table_bytes_ + (img->carried_ ? img->carried_->bytes_held() : 0);
  for (auto& c : img->captures_) img->info_.bytes += c->bytes_held();
  return img;
}

uint64_t Image::inflate(const CodecFor& codecs, Budget& budget) {
  if (inflated_) return 0;
  inflated_ = std::make_unique<Arena>(budget, Backing::memory);
  const uint8_t inflated_index = uint8_t(arenas_.size());
  arenas_.push_back(inflated_.get());
  // Pages that shared bytes (repeats resolved by hash) share them again.
  struct LocHash {
    size_t operator()(const std::pair<uint8_t, uint64_t>& k) const { return std::hash<uint64_t>{}(k.second * 257 + k.first); }
  };
  std::unordered_map<std::pair<uint8_t, uint64_t>, Loc, LocHash> done;
  alignas(64) uint8_t page[pages::kPageSize];
  uint64_t n = 0;
  bool full = false;
  for (Block& b : blocks_) {
    for (Page& p : b.pages) {
      if (full || p.content == Content::none || p.content == Content::zero || p.content == Content::deflate) continue;
      const std::pair<uint8_t, uint64_t> key{p.arena, (uint64_t(p.at.chunk) << 32) | p.at.offset};
      if (auto it = done.find(key); it != done.end()) {
        p = {p.hash, it->second, uint16_t(pages::kPageSize), inflated_index, Content::raw};
        continue;
      }
      if (!read(p, page, codecs).empty()) continue;  // stays as it is; read() refuses it later too
      Loc at;
      if (!inflated_->append({page, pages::kPageSize}, at)) {
        full = true;
        continue;
      }
      done.emplace(key, at);
      p = {p.hash, at, uint16_t(pages::kPageSize), inflated_index, Content::raw};
      ++n;
    }
  }
  // Captures whose bytes no page refers to any more give their budget back.
  std::vector<bool> used(arenas_.size(), false);
  for (const Block& b : blocks_) {
    for (const Page& p : b.pages) {
      if (p.content != Content::none && p.content != Content::zero) used[p.arena] = true;
    }
  }
  for (size_t i = 0; i < captures_.size(); ++i) {
    if (!used[i] && captures_[i]) {
      arenas_[i] = nullptr;
      captures_[i].reset();
    }
  }
  if (carried_ && !used[captures_.size()]) {
    arenas_[captures_.size()] = nullptr;
    carried_.reset();
  }
  info_.bytes = table_bytes_ + inflated_->bytes_held() + (carried_ ? carried_->bytes_held() : 0);
  for (auto& c : captures_) {
    if (c) info_.bytes += c->bytes_held();
  }
  return n;
}

Image::~Image() {
  if (budget_) budget_->give(table_bytes_);
}

const Image::Block* Image::block(std::string_view name) const {
  for (const Block& b : blocks_) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

std::string Image::read(const Page& p, uint8_t* out, const CodecFor& codecs) const {
  switch (p.content) {
    case Content::none:
    case Content::ref: return "page not held";
    case Content::zero: std::memset(out, 0, pages::kPageSize); break;
    case Content::raw:
      if (p.len != pages::kPageSize) return "stored raw page of a wrong length";
      std::memcpy(out, arenas_[p.arena]->at(p.at), pages::kPageSize);
      break;
    case Content::lz4:
    case Content::zstd:
    case Content::deflate: {
      const pages::CodecKind k = p.content == Content::lz4    ? pages::CodecKind::lz4
                                 : p.content == Content::zstd ? pages::CodecKind::zstd
                                                              : pages::CodecKind::deflate;
      pages::PageCodec* codec = codecs ? codecs(k) : nullptr;
      if (!codec) return std::string("no ") + std::string(pages::to_string(k)) + " codec for a stored page";
      if (!codec->decompress(arenas_[p.arena]->at(p.at), p.len, out)) {
        return "stored page does not decompress";
      }
      break;
    }
  }
  if (!(pages::page_hash(out) == p.hash)) return "stored page does not match its hash";
  return {};
}

}  // namespace mm::store
