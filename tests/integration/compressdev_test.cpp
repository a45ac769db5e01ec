// DEFLATE through DPDK compressdev on the real compress_isal PMD (ISA-L):
// pages round-trip byte-exact, incompressible pages go RAW, corrupt input
// fails cleanly. The same code drives QAT / BlueField engines.
#include <gtest/gtest.h>
#include <unistd.h>


#include "CodecChecks.hpp"
#include "dataplane/pages/Codecs.hpp"
#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/port/Eal.hpp"

using namespace mm::pages;
using mm::test::PageKind;

TEST(CompressdevDeflate, IsalRoundTripsCorpora) {
  CompressdevDeflate c("compress_isal0");
  mm::test::roundtrip_corpora(c);
}

TEST(CompressdevDeflate, CorruptInputFailsCleanly) {
  CompressdevDeflate c("compress_isal0");
  mm::test::rejects_corruption(c);
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
