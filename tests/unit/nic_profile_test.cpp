// Proves every shipped NIC profile loads, that variables fill the devargs,
// and that the EAL arguments always carry --no-pci and the port's vdev.
// (Bad profiles are exercised through memmotiond by the integration tests.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "dataplane/port/NicProfile.hpp"

using namespace mm::port;

namespace {
const std::string kDir = MEMMOTION_PROFILE_DIR;

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}
}  // namespace

TEST(NicProfile, AfPacketVethLoadsAndFillsIface) {
  const NicProfile p = load_profile(kDir + "/af_packet-veth.toml", {{"iface", "veth7"}});
  EXPECT_EQ(p.name, "af_packet-veth");
  EXPECT_EQ(p.port.pmd, "net_af_packet");
  EXPECT_NE(p.port.devargs.find("iface=veth7,"), std::string::npos);
  EXPECT_EQ(p.port.mtu, 9000u);
  EXPECT_GE(p.port.mbuf_data_room, p.port.mtu + 18);
  EXPECT_EQ(p.engine.idle, "backoff");
  const auto args = eal_arguments(p, "mm-x");
  EXPECT_TRUE(has(args, "--file-prefix=mm-x"));
  EXPECT_TRUE(has(args, "--no-pci"));
  EXPECT_TRUE(has(args, "--no-huge"));
  EXPECT_TRUE(has(args, "--vdev=net_af_packet0," + p.port.devargs));
}

TEST(NicProfile, MemifDefaultsAndAllowedRoles) {
  const NicProfile p = load_profile(kDir + "/memif.toml", {});
  EXPECT_NE(p.port.devargs.find("role=server"), std::string::npos);
  const NicProfile c = load_profile(kDir + "/memif.toml", {{"role", "client"}, {"socket", "/tmp/m.sock"}});
  EXPECT_NE(c.port.devargs.find("role=client,socket=/tmp/m.sock"), std::string::npos);
  EXPECT_THROW(load_profile(kDir + "/memif.toml", {{"role", "master"}}), ProfileError);
}

TEST(NicProfile, AfXdpStaysUnderTheVethXdpFrameLimit) {
  const NicProfile p = load_profile(kDir + "/af_xdp-veth.toml", {{"iface", "v"}}, {{"ebpf_dir", "/x"}});
  EXPECT_EQ(p.port.pmd, "net_af_xdp");
  EXPECT_NE(p.port.devargs.find("xdp_prog=/x/mm_steer.bpf.o"), std::string::npos);
  // A built-in is not a variable the operator may set.
  EXPECT_THROW(load_profile(kDir + "/af_xdp-veth.toml", {{"iface", "v"}, {"ebpf_dir", "/y"}},
                            {{"ebpf_dir", "/x"}}),
               ProfileError);
  EXPECT_LE(p.port.mtu, 3500u);
}

TEST(NicProfile, ErrorsNameFileAndKey) {
  const std::string f = ::testing::TempDir() + "/bad_profile.toml";
  std::ofstream(f) << "[profile]\nname = \"x\"\n[port]\npmd = \"net_ring\"\nmtu = 100\n";
  try {
    load_profile(f, {});
    FAIL() << "mtu 100 accepted";
  } catch (const ProfileError& e) {
    EXPECT_NE(std::string(e.what()).find(f + ": port.mtu: 100 is out of range (allowed 576..9600)"),
              std::string::npos)
        << e.what();
  }
  std::ofstream(f) << "[profile]\nname = \"x\"\n[port]\npmd = \"net_ring\"\nmtu = 1500\n"
                      "mbuf_data_room = 2048\n[engine]\nidle = \"spin\"\nspin_hard = true\n";
  try {
    load_profile(f, {});
    FAIL() << "unknown key accepted";
  } catch (const ProfileError& e) {
    EXPECT_NE(std::string(e.what()).find("engine.spin_hard: unknown key"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_profile(::testing::TempDir() + "/none.toml", {}), ProfileError);
  EXPECT_THROW(load_profile(kDir + "/af_packet-veth.toml", {{"iface", "a,b"}}), ProfileError);
}

TEST(NicProfile, InvalidUtf8IsRefusedBeforeTheTomlParserSeesIt) {
  // fuzz_nic_profile's crash: toml11 3.7.1 read past its buffer on a lead
  // byte without its continuation bytes inside a literal string.
  const std::string crash = "[profile]\nname = 'x\xe8y'\n";
  try {
    parse_profile(crash, "crash.toml", {});
    FAIL() << "accepted";
  } catch (const ProfileError& e) {
    EXPECT_NE(std::string(e.what()).find("crash.toml: malformed TOML: not UTF-8 at byte 19"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(first_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("a\xc3"), 1u);              // cut short
  EXPECT_EQ(first_invalid_utf8("a\xc0\xaf"), 1u);          // overlong '/'
  EXPECT_EQ(first_invalid_utf8("ab\xed\xa0\x80"), 2u);     // a surrogate
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(first_invalid_utf8("\x80"), 0u);                // a lone continuation byte
}

TEST(NicProfile, EveryShippedProfileLoads) {
  const std::map<std::string, std::string> samples = {
      {"iface", "veth0"}, {"pci", "0000:3b:00.0"}, {"qat", "0000:6b:00.1"}};
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kDir)) {
    if (entry.path().extension() != ".toml") continue;
    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::map<std::string, std::string> vars;
    for (const auto& [k, v] : samples) {
      if (text.find("[vars." + k + "]") != std::string::npos) vars[k] = v;
    }
    SCOPED_TRACE(entry.path().string());
    const NicProfile p = load_profile(entry.path(), vars, {{"ebpf_dir", "/x"}});
    EXPECT_EQ(p.name + ".toml", entry.path().filename().string());
    const auto args = eal_arguments(p, "mm-t");
    if (p.is_pci()) {
      // Real NICs: only the named devices are probed, never the whole bus.
      EXPECT_TRUE(has(args, "-a" + p.port.device + (p.port.devargs.empty() ? "" : "," + p.port.devargs)));
      EXPECT_FALSE(has(args, "--no-pci"));
      EXPECT_GT(p.line_rate_gbps, 0u);
    } else {
      EXPECT_TRUE(has(args, "--no-pci"));
    }
    if (p.offload.compressdev == "compress_qat") {
      EXPECT_TRUE(has(args, "-a" + p.offload.compress_device));
    }
    ++loaded;
  }
  EXPECT_GE(loaded, 9);
}

TEST(NicProfile, PciDevicesAreChecked) {
  EXPECT_THROW(load_profile(kDir + "/ice-e810.toml", {{"pci", "3b:00.0"}}), ProfileError);
  EXPECT_THROW(load_profile(kDir + "/ice-e810-qat.toml", {{"pci", "0000:3b:00.0"}, {"qat", "qat0"}}),
               ProfileError);
}
