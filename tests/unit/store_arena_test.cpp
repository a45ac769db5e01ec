// store/Arena: chunks taken from and given back to the budget, appends that
// never straddle a chunk, the file backing (mode 0600, removed with it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "dataplane/store/Arena.hpp"

using namespace mm::store;

TEST(StoreBudget, TakesOnlyWhatFits) {
  Budget b(100);
  EXPECT_TRUE(b.take(60));
  EXPECT_FALSE(b.take(41));
  EXPECT_TRUE(b.take(40));
  EXPECT_EQ(b.free(), 0u);
  b.give(60);
  EXPECT_EQ(b.used(), 40u);
  EXPECT_EQ(b.free(), 60u);
}

TEST(StoreArena, AppendsWithinChunksAndGivesTheBudgetBack) {
  Budget b(3 * Arena::kChunkBytes);
  {
    Arena a(b, Backing::memory);
    EXPECT_EQ(b.used(), 0u);  // nothing until the first append
    std::vector<uint8_t> page(4096);
    std::vector<Loc> at;
    for (int i = 0; i < 1000; ++i) {
      std::memset(page.data(), i & 0xff, page.size());
      Loc l;
      ASSERT_TRUE(a.append(page, l)) << a.error();
      ASSERT_LE(l.offset + page.size(), Arena::kChunkBytes);
      at.push_back(l);
    }
    // 511 pages of 4096 fit a chunk with room to spare? 512 exactly.
    EXPECT_EQ(a.chunks(), 2u);
    EXPECT_EQ(b.used(), 2 * Arena::kChunkBytes);
    for (int i = 0; i < 1000; ++i) {
      ASSERT_EQ(a.at(at[size_t(i)])[0], uint8_t(i & 0xff));
      ASSERT_EQ(a.at(at[size_t(i)])[4095], uint8_t(i & 0xff));
    }
  }
  EXPECT_EQ(b.used(), 0u);
}

TEST(StoreArena, RefusesPastTheBudget) {
  Budget b(Arena::kChunkBytes);
  Arena a(b, Backing::memory);
  std::vector<uint8_t> big(Arena::kChunkBytes - 10);
  Loc l;
  ASSERT_TRUE(a.append(big, l));
  std::vector<uint8_t> more(11);
  EXPECT_FALSE(a.append(more, l));
  EXPECT_EQ(a.error(), "store budget exhausted");
  std::vector<uint8_t> fits(10);
  EXPECT_TRUE(a.append(fits, l));
  std::vector<uint8_t> huge(Arena::kChunkBytes + 1);
  EXPECT_FALSE(a.append(huge, l));
}

TEST(StoreArena, FileBackingIsPrivateAndRemoved) {
  const auto dir = std::filesystem::temp_directory_path() / ("mm-arena-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "a").string();
  Budget b(4 * Arena::kChunkBytes);
  {
    Arena a(b, Backing::file, file);
    std::vector<uint8_t> page(4096, 0x5a);
    Loc l;
    for (int i = 0; i < 600; ++i) ASSERT_TRUE(a.append(page, l)) << a.error();
    EXPECT_EQ(a.at(l)[100], 0x5a);
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(uint64_t(st.st_size), 2 * Arena::kChunkBytes);
    // A second arena on the same file is refused, not shared.
    EXPECT_THROW(Arena(b, Backing::file, file), std::runtime_error);
  }
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_EQ(b.used(), 0u);
  std::filesystem::remove_all(dir);
}
