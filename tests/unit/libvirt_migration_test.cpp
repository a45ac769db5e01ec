// LibvirtPlan: what `memmotionctl migrate --libvirt` options become in
// libvirt's flags, and the combinations it refuses (control/LibvirtMigration.hpp).
// job_stats_json: libvirt's job statistics in the daemon's progress shape.
#include <gtest/gtest.h>

#include "LibvirtMigration.hpp"

using mm::control::LibvirtPlan;
using mm::control::LibvirtRequest;

namespace {

LibvirtRequest base() {
  LibvirtRequest r;
  r.socket_path = "/run/memmotion/libvirt-vm-7.sock";
  return r;
}

std::string refusal(const LibvirtRequest& r) {
  try {
    LibvirtPlan::from(r);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(LibvirtPlan, LivePeerToPeerParallelOverTheDaemonSocket) {
  const LibvirtPlan p = LibvirtPlan::from(base());
  EXPECT_EQ(p.migrate_uri, "unix:///run/memmotion/libvirt-vm-7.sock");
  EXPECT_EQ(p.parallel_connections, 4);
  EXPECT_EQ(p.flags, unsigned(VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PARALLEL));
}

TEST(LibvirtPlan, OneStreamWithoutParallel) {
  LibvirtRequest r = base();
  r.parallel_connections = 0;
  const LibvirtPlan p = LibvirtPlan::from(r);
  EXPECT_EQ(p.flags & VIR_MIGRATE_PARALLEL, 0u);
  EXPECT_EQ(p.parallel_connections, 0);
}

TEST(LibvirtPlan, PostcopyNeedsOneStream) {
  LibvirtRequest r = base();
  r.postcopy_after_s = 5;
  EXPECT_NE(refusal(r).find("does not combine postcopy with multifd"), std::string::npos) << refusal(r);
  r.parallel_connections = 0;
  const LibvirtPlan p = LibvirtPlan::from(r);
  EXPECT_NE(p.flags & VIR_MIGRATE_POSTCOPY, 0u);
  EXPECT_EQ(p.postcopy_after_s, 5);
}

TEST(LibvirtPlan, PersistenceAndSuspendFlagsAsVirsh) {
  LibvirtRequest r = base();
  r.persist_dest = true;
  EXPECT_EQ(LibvirtPlan::from(r).flags & (VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE),
            unsigned(VIR_MIGRATE_PERSIST_DEST));
  r.undefine_source = true;
  EXPECT_NE(LibvirtPlan::from(r).flags & VIR_MIGRATE_UNDEFINE_SOURCE, 0u);
  EXPECT_EQ(LibvirtPlan::from(r).flags & VIR_MIGRATE_PAUSED, 0u);
  r.suspend = true;
  EXPECT_NE(LibvirtPlan::from(r).flags & VIR_MIGRATE_PAUSED, 0u);
}

TEST(LibvirtPlan, RefusesWhatBypassesTheDaemons) {
  LibvirtRequest r = base();
  r.tunnelled = true;
  EXPECT_NE(refusal(r).find("--tunnelled cannot go through memmotiond"), std::string::npos);
  r = base();
  r.copy_storage = true;
  EXPECT_NE(refusal(r).find("NBD"), std::string::npos);
  r = base();
  r.socket_path = "relative.sock";
  EXPECT_NE(refusal(r).find("absolute path"), std::string::npos);
  r = base();
  r.parallel_connections = 65;
  EXPECT_NE(refusal(r).find("0..64"), std::string::npos);
}

TEST(LibvirtJobStats, InTheDaemonsProgressShape) {
  ASSERT_EQ(virInitialize(), 0);  // libvirt's per-thread error state
  virTypedParameterPtr params = nullptr;
  int n = 0, max = 0;
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_DATA_PROCESSED, 100 << 20), 0);
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_DATA_REMAINING, 50 << 20), 0);
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_MEMORY_BPS, 125000000), 0);
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE, 1000), 0);
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE, 4096), 0);
  ASSERT_EQ(virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_JOB_TIME_ELAPSED, 1234), 0);
  const auto j = mm::control::job_stats_json(params, n);
  virTypedParamsFree(params, n);
  EXPECT_EQ(j["transferred"], 100u << 20);
  EXPECT_EQ(j["remaining"], 50u << 20);
  EXPECT_DOUBLE_EQ(j["mbps"].get<double>(), 1000.0);  // 125 MB/s in Mbit/s
  EXPECT_EQ(j["dirty-rate"], 1000u * 4096);           // pages/s in bytes/s
  EXPECT_EQ(j["total-time-ms"], 1234u);
  EXPECT_EQ(j["downtime-ms"], 0u);  // absent: 0
}
