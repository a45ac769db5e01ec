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

TEST(CompressdevDeflate, EachWorkerHasItsOwnQueuePair) {
  // As memmotiond does for two workers: one queue pair each, every page
  // round-trips on both. First: the device is configured once per process.
  ASSERT_EQ(CompressdevDeflate::configure_device("compress_isal0", 2), 2);
  CompressdevDeflate w0("compress_isal0", 0), w1("compress_isal0", 1);
  mm::test::roundtrip_corpora(w0);
  mm::test::roundtrip_corpora(w1);
  try {
    CompressdevDeflate w2("compress_isal0", 2);
    FAIL() << "a third worker got a queue pair the device does not have";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("none for worker 2"), std::string::npos) << e.what();
  }
}

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
  CompressdevDeflate::stop_devices();
  mm::port::cleanup_eal();
  return rc;
}
