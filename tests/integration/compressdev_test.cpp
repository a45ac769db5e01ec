// DEFLATE through DPDK compressdev on the real compress_isal PMD (ISA-L):
// pages round-trip byte-exact, incompressible pages go RAW, corrupt input
// fails cleanly. The same code drives QAT / BlueField engines.
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "PageCorpus.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/port/Eal.hpp"

using namespace mm::pages;
using mm::test::PageKind;

TEST(CompressdevDeflate, IsalRoundTripsCorpora) {
  CompressdevDeflate c("compress_isal0");
  std::vector<uint8_t> out(kCompressBound), back(kPageSize);
  for (auto kind : {PageKind::zero, PageKind::text, PageKind::code, PageKind::random, PageKind::mix}) {
    auto pages = mm::test::corpus(kind, 16);
    for (size_t i = 0; i < 16; ++i) {
      const uint8_t* p = pages.data() + i * kPageSize;
      const size_t n = c.compress(p, out.data(), out.size());
      if (kind == PageKind::random) {
        EXPECT_EQ(n, 0u);
        continue;
      }
      if (kind == PageKind::zero || kind == PageKind::text) {
        EXPECT_GT(n, 0u);
      }
      if (n == 0) continue;
      ASSERT_TRUE(c.decompress(out.data(), n, back.data())) << mm::test::name(kind);
      EXPECT_EQ(std::memcmp(back.data(), p, kPageSize), 0) << mm::test::name(kind);
    }
  }
}

TEST(CompressdevDeflate, CorruptInputFailsCleanly) {
  CompressdevDeflate c("compress_isal0");
  std::vector<uint8_t> back(kPageSize);
  std::mt19937 rng(9);
  int accepted = 0;
  for (int i = 0; i < 100; ++i) {
    std::vector<uint8_t> junk(1 + rng() % 3000);
    for (auto& b : junk) b = uint8_t(rng());
    accepted += c.decompress(junk.data(), junk.size(), back.data());
  }
  EXPECT_EQ(accepted, 0);
}

TEST(CompressdevDeflate, UnknownDeviceIsAClearError) {
  try {
    CompressdevDeflate c("compress_nothing0");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("compress_nothing0 does not exist"), std::string::npos);
  }
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "compressdev_test needs root (DPDK EAL)\n");
    return 1;
  }
  mm::port::init_eal({"compressdev_test", "--no-huge", "-m", "256", "--no-pci", "--no-telemetry",
                      "--log-level=warning", "--file-prefix=mm-cd-" + std::to_string(getpid()),
                      "--vdev=compress_isal0"});
  const int rc = RUN_ALL_TESTS();
  mm::port::cleanup_eal();
  return rc;
}
