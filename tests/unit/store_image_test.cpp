// store/Image: captures of several flows merged into one image by epoch;
// pages read back decoded and checked against their hash; repeats resolved
// by hash; a capture out of budget gives pages not held, never stale ones.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/store/Image.hpp"

using namespace mm;
using namespace mm::store;

namespace {

std::vector<uint8_t> page_of(uint8_t fill, uint8_t tweak = 0) {
  std::vector<uint8_t> p(pages::kPageSize, fill);
  p[17] = tweak;
  return p;
}

struct Codecs {
  pages::Lz4Codec lz4;
  pages::ZstdCodec zstd;
  Image::CodecFor fn() {
    return [this](pages::CodecKind k) -> pages::PageCodec* {
      if (k == pages::CodecKind::lz4) return &lz4;
      if (k == pages::CodecKind::zstd) return &zstd;
      return nullptr;
    };
  }
};

void log_page(Capture& c, uint16_t blk, uint64_t index, uint32_t epoch, const std::vector<uint8_t>& page,
              pages::PageCodec* codec) {
  const pages::PageHash h = pages::page_hash(page.data());
  if (!codec) return c.page(blk, index, epoch, h, Content::raw, page);
  std::vector<uint8_t> out(pages::kCompressBound);
  const size_t n = codec->compress(page.data(), out.data(), out.size());
  if (n == 0) return c.page(blk, index, epoch, h, Content::raw, page);  // not worth compressing
  c.page(blk, index, epoch, h, content_of(codec->kind()), {out.data(), n});
}

}  // namespace

TEST(StoreImage, NewestEpochWinsAcrossFlows) {
  Budget budget(64 << 20);
  Codecs codecs;
  auto a = std::make_unique<Capture>(budget, Backing::memory, "");
  auto b = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t ra = a->block("pc.ram"), rb = b->block("pc.ram");
  const uint16_t vb = b->block("vga.vram");
  // Page 0: epoch 1 on flow a, epoch 2 on flow b (b's wins, though logged first).
  log_page(*b, rb, 0, 2, page_of(2), &codecs.zstd);
  log_page(*a, ra, 0, 1, page_of(1), &codecs.lz4);
  // Page 1: flow a, twice in epoch 1 would be QEMU's bug; a later epoch on the same flow.
  log_page(*a, ra, 1, 1, page_of(3), nullptr);
  log_page(*a, ra, 1, 3, page_of(4), &codecs.lz4);
  // Page 2: zero; page 3: a repeat of page 0's newest bytes (REF) on flow a.
  a->page(ra, 2, 1, pages::zero_page_hash(), Content::zero);
  a->page(ra, 3, 2, pages::page_hash(page_of(2).data()), Content::ref);
  // Page 4: the same epoch on two flows: not held.
  log_page(*a, ra, 4, 5, page_of(5), nullptr);
  log_page(*b, rb, 4, 5, page_of(6), nullptr);
  // Page 5 of another block, then lost in a later epoch: not held.
  log_page(*b, vb, 5, 1, page_of(7), nullptr);
  b->lost(vb, 5, 2);
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(a));
  caps.push_back(std::move(b));
  std::string why;
  auto img = Image::merge("vm-1", std::move(caps), budget, why);
  ASSERT_TRUE(img) << why;
  EXPECT_EQ(img->info().vm, "vm-1");
  EXPECT_NE(img->info().generation, 0u);
  const Image::Block* ram = img->block("pc.ram");
  ASSERT_NE(ram, nullptr);
  ASSERT_EQ(ram->pages.size(), 5u);
  std::vector<uint8_t> out(pages::kPageSize);
  auto expect_page = [&](const Image::Page& p, const std::vector<uint8_t>& want) {
    ASSERT_EQ(img->read(p, out.data(), codecs.fn()), "");
    EXPECT_EQ(std::memcmp(out.data(), want.data(), want.size()), 0);
  };
  expect_page(ram->pages[0], page_of(2));
  expect_page(ram->pages[1], page_of(4));
  expect_page(ram->pages[2], std::vector<uint8_t>(pages::kPageSize, 0));
  expect_page(ram->pages[3], page_of(2));
  EXPECT_EQ(ram->pages[4].content, Content::none);
  EXPECT_EQ(img->read(ram->pages[4], out.data(), codecs.fn()), "page not held");
  const Image::Block* vram = img->block("vga.vram");
  ASSERT_NE(vram, nullptr);
  ASSERT_EQ(vram->pages.size(), 6u);
  EXPECT_EQ(vram->pages[5].content, Content::none);
  EXPECT_EQ(vram->pages[0].content, Content::none);  // never written
  EXPECT_EQ(img->info().pages, 11u);  // the page tables' slots
  EXPECT_EQ(img->info().pages_held, 4u);
  EXPECT_EQ(img->block("nope"), nullptr);
}

TEST(StoreImage, ReadChecksTheHash) {
  Budget budget(16 << 20);
  Codecs codecs;
  auto a = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t r = a->block("pc.ram");
  const auto p = page_of(9);
  // Bytes that are not the page the hash names: kept, but never read back.
  a->page(r, 0, 1, pages::page_hash(page_of(8).data()), Content::raw, p);
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(a));
  std::string why;
  auto img = Image::merge("vm", std::move(caps), budget, why);
  ASSERT_TRUE(img) << why;
  std::vector<uint8_t> out(pages::kPageSize);
  EXPECT_EQ(img->read(img->block("pc.ram")->pages[0], out.data(), codecs.fn()), "stored page does not match its hash");
}

TEST(StoreImage, OutOfBudgetPagesAreNotHeldAndTheBudgetComesBack) {
  // Room for the log's chunk and one chunk of bytes (512 raw pages).
  Budget budget(2 * Arena::kChunkBytes + (1 << 20));
  Codecs codecs;
  {
    auto a = std::make_unique<Capture>(budget, Backing::memory, "");
    const uint16_t r = a->block("pc.ram");
    const auto pagesv = test::corpus(test::PageKind::random, 600);
    for (uint64_t i = 0; i < 600; ++i) {
      a->page(r, i, 1, pages::page_hash(pagesv.data() + i * 4096), Content::raw,
              {pagesv.data() + i * 4096, pages::kPageSize});
    }
    EXPECT_FALSE(a->broken());
    EXPECT_EQ(a->pages_without_bytes(), 88u);
    std::vector<std::unique_ptr<Capture>> caps;
    caps.push_back(std::move(a));
    std::string why;
    auto img = Image::merge("vm", std::move(caps), budget, why);
    ASSERT_TRUE(img) << why;
    EXPECT_EQ(img->info().pages_held, 512u);
    std::vector<uint8_t> out(pages::kPageSize);
    const auto& pg = img->block("pc.ram")->pages;
    EXPECT_EQ(img->read(pg[511], out.data(), codecs.fn()), "");
    EXPECT_EQ(std::memcmp(out.data(), pagesv.data() + 511 * 4096, 4096), 0);
    EXPECT_EQ(pg[512].content, Content::none);
    EXPECT_GT(budget.used(), 0u);
  }
  EXPECT_EQ(budget.used(), 0u);
}

TEST(StoreImage, ABrokenLogMakesNoImage) {
  Budget budget(Arena::kChunkBytes);  // the log's first chunk, then nothing
  auto a = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t r = a->block("pc.ram");
  for (uint64_t i = 0; i < Arena::kChunkBytes / 40 + 10; ++i) a->page(r, i, 1, pages::zero_page_hash(), Content::zero);
  EXPECT_TRUE(a->broken());
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(a));
  std::string why;
  EXPECT_FALSE(Image::merge("vm", std::move(caps), budget, why));
  EXPECT_EQ(why, "a flow's capture ran out of budget for its log");
}

TEST(StoreImage, InflateKeepsEveryPageAndFreesTheCaptures) {
  Budget budget(64 << 20);
  Codecs codecs;
  auto a = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t r = a->block("pc.ram");
  const auto corpus = test::corpus(test::PageKind::mix, 64);
  for (uint64_t i = 0; i < 64; ++i) {
    std::vector<uint8_t> pg(corpus.begin() + long(i * 4096), corpus.begin() + long((i + 1) * 4096));
    log_page(*a, r, i, 1, pg, i % 3 == 0 ? nullptr : (i % 3 == 1 ? static_cast<pages::PageCodec*>(&codecs.lz4)
                                                                 : static_cast<pages::PageCodec*>(&codecs.zstd)));
  }
  a->page(r, 64, 1, pages::page_hash(corpus.data()), Content::ref);  // a repeat of page 0
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(a));
  std::string why;
  auto img = Image::merge("vm", std::move(caps), budget, why);
  ASSERT_TRUE(img) << why;
  EXPECT_EQ(img->inflate(codecs.fn(), budget), 64u);  // the repeat shares page 0's bytes
  const auto& pg = img->block("pc.ram")->pages;
  std::vector<uint8_t> out(pages::kPageSize);
  for (uint64_t i = 0; i <= 64; ++i) {
    ASSERT_EQ(pg[i].content, Content::raw) << i;
    ASSERT_NE(img->view(pg[i]), nullptr);
    ASSERT_EQ(img->read(pg[i], out.data(), nullptr), "") << i;  // no codec needed any more
    EXPECT_EQ(std::memcmp(out.data(), corpus.data() + (i == 64 ? 0 : i) * 4096, 4096), 0) << i;
  }
  // Only the inflated chunk and the page table are left.
  EXPECT_EQ(budget.used(), Arena::kChunkBytes + 65 * sizeof(Image::Page));
  EXPECT_EQ(img->info().bytes, budget.used());
}

TEST(StoreImage, PagesWithoutBytesTakeThemFromThePriorImageOfTheVmOnlyWhenTheHashMatches) {
  // A first migration's image holds pages 0..3; a second migration sends
  // page 0 in full, pages 1 and 2 as PAGE_STORED (logged as repeats of
  // their hash, no bytes), page 3 as PAGE_STORED with a hash the prior
  // image does not hold for it. The new image holds 0, 1, 2 -- 1 and 2
  // with the prior image's bytes, copied -- and not 3.
  Budget budget(64 << 20);
  Codecs codecs;
  std::shared_ptr<Image> first;
  {
    auto c = std::make_unique<Capture>(budget, Backing::memory, "");
    const uint16_t blk = c->block("pc.ram");
    for (uint64_t i = 0; i < 4; ++i) log_page(*c, blk, i, 1, page_of(uint8_t(10 + i)), i % 2 ? &codecs.lz4 : nullptr);
    std::vector<std::unique_ptr<Capture>> caps;
    caps.push_back(std::move(c));
    std::string why;
    first = Image::merge("vm", std::move(caps), budget, why);
    ASSERT_TRUE(first) << why;
  }
  auto c = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t blk = c->block("pc.ram");
  log_page(*c, blk, 0, 1, page_of(20), nullptr);
  c->page(blk, 1, 1, pages::page_hash(page_of(11).data()), Content::ref);
  c->page(blk, 2, 1, pages::page_hash(page_of(12).data()), Content::ref);
  c->page(blk, 3, 1, pages::page_hash(page_of(99).data()), Content::ref);
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(c));
  std::string why;
  auto second = Image::merge("vm", std::move(caps), budget, why, first.get());
  ASSERT_TRUE(second) << why;
  EXPECT_EQ(second->carried(), 2u);
  EXPECT_EQ(second->info().pages_held, 3u);
  const Image::Block* b = second->block("pc.ram");
  ASSERT_NE(b, nullptr);
  std::vector<uint8_t> out(pages::kPageSize);
  const uint8_t want[] = {20, 11, 12};
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_EQ(second->read(b->pages[i], out.data(), codecs.fn()), "") << i;
    EXPECT_EQ(out, page_of(want[i])) << i;
  }
  EXPECT_NE(second->read(b->pages[3], out.data(), codecs.fn()), "");
  // The copies outlive the prior image, inflated or not.
  first.reset();
  ASSERT_EQ(second->read(b->pages[1], out.data(), codecs.fn()), "");
  EXPECT_EQ(out, page_of(11));
  second->inflate(codecs.fn(), budget);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_EQ(second->read(b->pages[i], out.data(), codecs.fn()), "") << i;
    EXPECT_EQ(out, page_of(want[i])) << i;
  }
  // Without a prior image the same log holds only page 0.
  auto d = std::make_unique<Capture>(budget, Backing::memory, "");
  const uint16_t db = d->block("pc.ram");
  log_page(*d, db, 0, 1, page_of(20), nullptr);
  d->page(db, 1, 1, pages::page_hash(page_of(11).data()), Content::ref);
  std::vector<std::unique_ptr<Capture>> caps2;
  caps2.push_back(std::move(d));
  auto third = Image::merge("vm", std::move(caps2), budget, why);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->info().pages_held, 1u);
  EXPECT_EQ(third->carried(), 0u);
}
