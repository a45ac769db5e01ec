// mm-xdp-steer: configures (and reports on) the mm_steer XDP program that
// the DPDK af_xdp PMD attached to an interface: the MMP port range and a
// loss-injection drop rate for tests.
#include <bpf/bpf.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "ebpf/XdpMaps.hpp"

namespace {
struct SteerConf {
  uint32_t drop_ppm;
  uint16_t port_base;
  uint16_t ports;
};
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mm-xdp-steer: configure the MMP steering XDP program on an interface"};
  std::string iface;
  double loss = -1;
  uint16_t port_base = 0, ports = 0;
  bool stats = false;
  app.add_option("--iface", iface, "interface whose attached mm_steer to configure")->required();
  app.add_option("--loss", loss, "percent of MMP frames to drop (tests)")->check(CLI::Range(0.0, 100.0));
  app.add_option("--port-base", port_base, "first MMP UDP port (0: 7470)");
  app.add_option("--ports", ports, "number of MMP UDP ports (0: 64)");
  app.add_flag("--stats", stats, "print passed / steered / dropped frame counts");
  CLI11_PARSE(app, argc, argv);
  try {
    if (loss >= 0 || port_base || ports) {
      const int fd = mm::ebpf::attached_map_fd(iface, "mm_steer_conf");
      const uint32_t key = 0;
      SteerConf c{};
      bpf_map_lookup_elem(fd, &key, &c);
      if (loss >= 0) c.drop_ppm = uint32_t(loss * 10000.0 + 0.5);
      if (port_base) c.port_base = port_base;
      if (ports) c.ports = ports;
      if (bpf_map_update_elem(fd, &key, &c, BPF_ANY) != 0) {
        std::cerr << "mm-xdp-steer: cannot update mm_steer_conf on " << iface << "\n";
        return 1;
      }
      ::close(fd);
      std::printf("mm-xdp-steer: %s drop %u ppm, ports %u+%u\n", iface.c_str(), c.drop_ppm,
                  c.port_base ? c.port_base : 7470, c.ports ? c.ports : 64);
    }
    if (stats) {
      const int fd = mm::ebpf::attached_map_fd(iface, "mm_steer_stats");
      const auto v = mm::ebpf::read_percpu_counters(fd, 3);
      ::close(fd);
      std::printf("passed %llu steered %llu dropped %llu\n", (unsigned long long)v[0],
                  (unsigned long long)v[1], (unsigned long long)v[2]);
    }
  } catch (const mm::ebpf::XdpError& e) {
    std::cerr << "mm-xdp-steer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
