// mm-xdp-loss: attaches ebpf/mm_loss.bpf.o to an interface with a drop
// rate, keeps it attached until SIGINT/SIGTERM, then detaches and prints
// how many MMP frames it saw and dropped. Used by the tests to inject loss
// on a veth (this kernel has no netem).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <vector>

#include "ebpf/XdpMaps.hpp"

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct LossConfig {
  uint32_t drop_ppm;
  uint16_t port_base;
  uint16_t ports;
  uint32_t all;
};
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mm-xdp-loss: random loss of MMP frames on an interface, for tests"};
  std::string iface, object = MM_LOSS_BPF_OBJECT;
  double percent = 1.0;
  uint16_t port_base = 7470, ports = 64;
  app.add_option("--iface", iface, "interface to attach to")->required();
  app.add_option("--loss", percent, "percent of MMP frames to drop")->check(CLI::Range(0.0, 100.0));
  app.add_option("--port-base", port_base, "first MMP UDP port")->capture_default_str();
  app.add_option("--ports", ports, "number of MMP UDP ports")->capture_default_str();
  app.add_option("--object", object, "BPF object file")->capture_default_str();
  bool all = false;
  app.add_flag("--all", all, "drop that share of every frame, not only MMP ones (--loss 100: a cut link)");
  CLI11_PARSE(app, argc, argv);

  const unsigned ifindex = if_nametoindex(iface.c_str());
  if (ifindex == 0) {
    std::cerr << "mm-xdp-loss: no interface " << iface << "\n";
    return 2;
  }
  bpf_object* obj = bpf_object__open_file(object.c_str(), nullptr);
  if (!obj || libbpf_get_error(obj)) {
    std::cerr << "mm-xdp-loss: cannot open " << object << "\n";
    return 1;
  }
  if (bpf_object__load(obj) != 0) {
    std::cerr << "mm-xdp-loss: the kernel refused " << object << "\n";
    return 1;
  }
  bpf_program* prog = bpf_object__find_program_by_name(obj, "mm_loss");
  bpf_map* cfg_map = bpf_object__find_map_by_name(obj, "loss_config");
  bpf_map* stats_map = bpf_object__find_map_by_name(obj, "loss_stats");
  if (!prog || !cfg_map || !stats_map) {
    std::cerr << "mm-xdp-loss: " << object << " lacks mm_loss/loss_config/loss_stats\n";
    return 1;
  }
  const uint32_t key = 0;
  LossConfig cfg{uint32_t(percent * 10000.0 + 0.5), port_base, ports, all ? 1u : 0u};
  if (bpf_map_update_elem(bpf_map__fd(cfg_map), &key, &cfg, BPF_ANY) != 0) {
    std::cerr << "mm-xdp-loss: cannot set the drop rate\n";
    return 1;
  }
  // Quiet libbpf: a refused native attach is expected (veth with a jumbo
  // MTU) and is retried in generic mode below.
  libbpf_set_print(nullptr);
  const int fd = bpf_program__fd(prog);
  uint32_t mode = XDP_FLAGS_DRV_MODE;
  if (bpf_xdp_attach(int(ifindex), fd, mode, nullptr) != 0) {
    mode = XDP_FLAGS_SKB_MODE;  // a driver without native XDP
    if (bpf_xdp_attach(int(ifindex), fd, mode, nullptr) != 0) {
      std::cerr << "mm-xdp-loss: cannot attach XDP to " << iface << "\n";
      return 1;
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const char* what = all ? "frames" : "MMP frames";
  std::printf("mm-xdp-loss: attached to %s (%s mode), dropping %.3f%% of %s\n", iface.c_str(),
              mode == XDP_FLAGS_DRV_MODE ? "native" : "generic", percent, what);
  std::fflush(stdout);
  while (!g_stop) pause();
  bpf_xdp_detach(int(ifindex), mode, nullptr);
  const auto totals = mm::ebpf::read_percpu_counters(bpf_map__fd(stats_map), 2);
  std::printf("mm-xdp-loss: %s saw %llu %s, dropped %llu\n", iface.c_str(), (unsigned long long)totals[0], what,
              (unsigned long long)totals[1]);
  bpf_object__close(obj);
  return 0;
}
