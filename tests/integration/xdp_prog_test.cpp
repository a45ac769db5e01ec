// Runs the XDP programs of ebpf/ on crafted frames with BPF_PROG_TEST_RUN:
// MMP frames are steered (or dropped at the configured rate), everything
// else passes to the kernel, and the counters say so. Needs root (bpf()).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

namespace {

std::vector<uint8_t> udp_frame(uint16_t dport, uint8_t proto = 17, uint16_t ethertype = 0x0800) {
  std::vector<uint8_t> f(14 + 20 + 8 + 64, 0);
  f[12] = uint8_t(ethertype >> 8);
  f[13] = uint8_t(ethertype);
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  ip[2] = 0;
  ip[3] = 20 + 8 + 64;
  ip[8] = 64;
  ip[9] = proto;
  uint8_t* udp = ip + 20;
  udp[2] = uint8_t(dport >> 8);
  udp[3] = uint8_t(dport);
  udp[5] = 8 + 64;
  return f;
}

struct Prog {
  explicit Prog(const char* object, const char* name) {
    obj = bpf_object__open_file(object, nullptr);
    if (!obj || libbpf_get_error(obj) || bpf_object__load(obj) != 0) return;
    prog = bpf_object__find_program_by_name(obj, name);
  }
  ~Prog() {
    if (obj && !libbpf_get_error(obj)) bpf_object__close(obj);
  }
  int map(const char* name) { return bpf_map__fd(bpf_object__find_map_by_name(obj, name)); }
  uint32_t run(std::vector<uint8_t> frame) {
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame.data(), .data_size_in = uint32_t(frame.size()));
    EXPECT_EQ(bpf_prog_test_run_opts(bpf_program__fd(prog), &o), 0);
    return o.retval;
  }
  uint64_t counter(const char* map_name, uint32_t key) {
    const int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> per(size_t(ncpu > 0 ? ncpu : 1));
    bpf_map_lookup_elem(map(map_name), &key, per.data());
    uint64_t s = 0;
    for (auto v : per) s += v;
    return s;
  }
  bpf_object* obj = nullptr;
  bpf_program* prog = nullptr;
};

struct SteerConf {
  uint32_t drop_ppm;
  uint16_t port_base;
  uint16_t ports;
};

class XdpProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) FAIL() << "needs root: BPF_PROG_TEST_RUN loads programs with bpf()";
  }
};

}  // namespace

TEST_F(XdpProgram, SteerSendsMmpToXskAndPassesTheRest) {
  Prog p(MM_EBPF_DIR "/mm_steer.bpf.o", "mm_steer");
  ASSERT_NE(p.prog, nullptr) << "cannot load mm_steer.bpf.o";
  // No AF_XDP socket in xsks_map: bpf_redirect_map falls back to XDP_PASS.
  EXPECT_EQ(p.run(udp_frame(7470)), uint32_t(XDP_PASS));
  EXPECT_EQ(p.counter("mm_steer_stats", 1), 1u);  // counted as steered
  EXPECT_EQ(p.run(udp_frame(7533)), uint32_t(XDP_PASS));
  EXPECT_EQ(p.counter("mm_steer_stats", 1), 2u);  // last port of the default range
  EXPECT_EQ(p.run(udp_frame(7534)), uint32_t(XDP_PASS));
  EXPECT_EQ(p.run(udp_frame(7470, 6)), uint32_t(XDP_PASS));          // TCP
  EXPECT_EQ(p.run(udp_frame(7470, 17, 0x0806)), uint32_t(XDP_PASS));  // ARP
  EXPECT_EQ(p.run(std::vector<uint8_t>(20, 0)), uint32_t(XDP_PASS));   // runt
  EXPECT_EQ(p.counter("mm_steer_stats", 0), 4u);
  EXPECT_EQ(p.counter("mm_steer_stats", 1), 2u);

  // Full loss injection: MMP frames are dropped, the rest still passes.
  const uint32_t key = 0;
  SteerConf c{1000000, 9000, 4};
  ASSERT_EQ(bpf_map_update_elem(p.map("mm_steer_conf"), &key, &c, BPF_ANY), 0);
  EXPECT_EQ(p.run(udp_frame(9003)), uint32_t(XDP_DROP));
  EXPECT_EQ(p.run(udp_frame(7470)), uint32_t(XDP_PASS));  // no longer in the range
  EXPECT_EQ(p.counter("mm_steer_stats", 2), 1u);
}

// ebpf/mm_loss.bpf.c's loss_config.
struct LossConf {
  uint32_t drop_ppm;
  uint16_t port_base;
  uint16_t ports;
  uint32_t all;
};

// mm_loss loaded with that configuration (nullptr prog: it did not load).
std::unique_ptr<Prog> loss_prog(LossConf c) {
  auto p = std::make_unique<Prog>(MM_EBPF_DIR "/mm_loss.bpf.o", "mm_loss");
  const uint32_t key = 0;
  if (p->prog && bpf_map_update_elem(p->map("loss_config"), &key, &c, BPF_ANY) != 0) p->prog = nullptr;
  return p;
}

TEST_F(XdpProgram, LossDropsAtTheConfiguredRate) {
  auto pp = loss_prog({100000, 7470, 64, 0});  // 10% of MMP frames
  Prog& p = *pp;
  ASSERT_NE(p.prog, nullptr) << "cannot load or configure mm_loss.bpf.o";
  int dropped = 0;
  for (int i = 0; i < 4000; ++i) dropped += p.run(udp_frame(7471)) == XDP_DROP;
  // 10% of 4000 = 400; the binomial spread is ~19, so 300..500 cannot flake.
  EXPECT_GT(dropped, 300);
  EXPECT_LT(dropped, 500);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(p.run(udp_frame(80)), uint32_t(XDP_PASS));
  EXPECT_EQ(p.counter("loss_stats", 0), 4000u);
  EXPECT_EQ(p.counter("loss_stats", 1), uint64_t(dropped));
}

TEST_F(XdpProgram, LossWithAllCutsEveryFrame) {
  // mm-xdp-loss --all --loss 100: a cut link, the peer channel's TCP too.
  auto pp = loss_prog({1000000, 7470, 64, 1});
  Prog& p = *pp;
  ASSERT_NE(p.prog, nullptr) << "cannot load or configure mm_loss.bpf.o";
  EXPECT_EQ(p.run(udp_frame(7471)), uint32_t(XDP_DROP));
  EXPECT_EQ(p.run(udp_frame(80)), uint32_t(XDP_DROP));
  EXPECT_EQ(p.run(udp_frame(7471, 6)), uint32_t(XDP_DROP));  // TCP
  EXPECT_EQ(p.counter("loss_stats", 1), 3u);
}
