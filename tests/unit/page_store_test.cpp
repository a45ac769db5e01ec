// store/PageStore: images per VM (a newer one replaces the older), least
// recently migrated evicted first, forget, sizes, the file backing's directory.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "dataplane/store/PageStore.hpp"

using namespace mm;
using namespace mm::store;

namespace {

std::shared_ptr<const Image> image_of(PageStore& s, const std::string& vm, uint64_t pages_n) {
  auto c = s.capture();
  const uint16_t r = c->block("pc.ram");
  std::vector<uint8_t> page(pages::kPageSize);
  for (uint64_t i = 0; i < pages_n; ++i) {
    page[0] = uint8_t(i);
    page[1] = uint8_t(i >> 8);
    c->page(r, i, 1, pages::page_hash(page.data()), Content::raw, page);
  }
  std::vector<std::unique_ptr<Capture>> caps;
  caps.push_back(std::move(c));
  std::string why;
  auto img = Image::merge(vm, std::move(caps), s.budget(), why);
  EXPECT_TRUE(img) << why;
  return img;
}

}  // namespace

TEST(PageStore, OneImagePerVmLeastRecentlyMigratedEvictedFirst) {
  PageStore s({64 << 20, Backing::memory, ""});
  s.put(image_of(s, "a", 100));
  s.put(image_of(s, "b", 100));
  s.put(image_of(s, "c", 100));
  ASSERT_EQ(s.list().size(), 3u);
  EXPECT_EQ(s.list()[0].vm, "c");
  const uint64_t gen_a = s.find("a")->info().generation;  // a is now the most recent
  EXPECT_EQ(s.list()[0].vm, "a");
  s.put(image_of(s, "a", 50));  // replaces a's older image
  ASSERT_EQ(s.list().size(), 3u);
  EXPECT_NE(s.find("a")->info().generation, gen_a);
  EXPECT_EQ(s.find("a")->info().pages, 50u);
  // Room for most of the budget: b (least recent) goes first, then c; never a.
  const uint64_t used_before = s.budget().used();
  EXPECT_EQ(s.make_room(s.budget().limit() - used_before + 1, "a"), 1u);
  EXPECT_EQ(s.find("b"), nullptr);
  EXPECT_NE(s.find("c"), nullptr);
  EXPECT_LT(s.budget().used(), used_before);
  EXPECT_EQ(s.make_room(s.budget().limit(), "a"), 1u);
  EXPECT_EQ(s.list().size(), 1u);
  EXPECT_EQ(s.evictions(), 2u);
  EXPECT_TRUE(s.forget("a"));
  EXPECT_FALSE(s.forget("a"));
  EXPECT_EQ(s.budget().used(), 0u);
}

TEST(PageStore, AnImageInUseOutlivesItsEviction) {
  PageStore s({64 << 20, Backing::memory, ""});
  s.put(image_of(s, "a", 10));
  auto held = s.find("a");
  EXPECT_TRUE(s.forget("a"));
  EXPECT_GT(s.budget().used(), 0u);
  std::vector<uint8_t> out(pages::kPageSize);
  EXPECT_EQ(held->read(held->block("pc.ram")->pages[3], out.data(), nullptr), "");
  held.reset();
  EXPECT_EQ(s.budget().used(), 0u);
}

TEST(PageStore, OffStoreHandsOutNoCapture) {
  PageStore s({0, Backing::memory, ""});
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.capture(), nullptr);
}

TEST(PageStore, FileBackingInAPrivateDirectory) {
  const auto dir = std::filesystem::temp_directory_path() / ("mm-store-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    PageStore s({64 << 20, Backing::file, dir.string()});
    struct stat st {};
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    s.put(image_of(s, "a", 10));
    size_t files = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) {
      ++files;
      EXPECT_EQ(std::filesystem::status(e).permissions() & std::filesystem::perms::all,
                std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    EXPECT_EQ(files, 1u);
    s.forget("a");
    EXPECT_TRUE(std::filesystem::is_empty(dir));
  }
  // A directory others can read is refused.
  ::chmod(dir.c_str(), 0755);
  EXPECT_THROW(PageStore({64 << 20, Backing::file, dir.string()}), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(PageStore, ParsesSizes) {
  EXPECT_EQ(parse_bytes("0"), 0u);
  EXPECT_EQ(parse_bytes("4096"), 4096u);
  EXPECT_EQ(parse_bytes("64k"), 65536u);
  EXPECT_EQ(parse_bytes("512M"), 512ull << 20);
  EXPECT_EQ(parse_bytes("2G"), 2ull << 30);
  EXPECT_EQ(parse_bytes("1GiB"), 1ull << 30);
  EXPECT_THROW(parse_bytes(""), std::invalid_argument);
  EXPECT_THROW(parse_bytes("1X"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("-1"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("99999999999T"), std::invalid_argument);
}
