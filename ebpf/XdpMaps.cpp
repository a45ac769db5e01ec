#include "ebpf/XdpMaps.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mm::ebpf {

int attached_map_fd(const std::string& iface, const std::string& map_name) {
  const unsigned ifindex = if_nametoindex(iface.c_str());
  if (ifindex == 0) throw XdpError("no interface " + iface);
  bpf_xdp_query_opts q{};
  q.sz = sizeof q;
  if (bpf_xdp_query(int(ifindex), 0, &q) != 0) throw XdpError("cannot query XDP on " + iface);
  const uint32_t prog_id = q.prog_id ? q.prog_id : (q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id);
  if (prog_id == 0) throw XdpError("no XDP program attached to " + iface);
  const int prog_fd = bpf_prog_get_fd_by_id(prog_id);
  if (prog_fd < 0) throw XdpError("cannot open XDP program " + std::to_string(prog_id));
  uint32_t map_ids[16] = {};
  bpf_prog_info info{};
  info.nr_map_ids = 16;
  info.map_ids = reinterpret_cast<uint64_t>(map_ids);
  uint32_t len = sizeof info;
  const int rc = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
  ::close(prog_fd);
  if (rc != 0) throw XdpError("cannot read XDP program info: " + std::string(strerror(errno)));
  for (uint32_t i = 0; i < info.nr_map_ids && i < 16; ++i) {
    const int fd = bpf_map_get_fd_by_id(map_ids[i]);
    if (fd < 0) continue;
    bpf_map_info mi{};
    uint32_t mlen = sizeof mi;
    if (bpf_obj_get_info_by_fd(fd, &mi, &mlen) == 0 && map_name == mi.name) return fd;
    ::close(fd);
  }
  throw XdpError("the XDP program on " + iface + " (" + info.name + ") has no map " + map_name);
}

std::vector<uint64_t> read_percpu_counters(int map_fd, uint32_t entries) {
  const int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> per(size_t(ncpu > 0 ? ncpu : 1));
  std::vector<uint64_t> out(entries, 0);
  for (uint32_t k = 0; k < entries; ++k) {
    if (bpf_map_lookup_elem(map_fd, &k, per.data()) == 0) {
      for (uint64_t v : per) out[k] += v;
    }
  }
  return out;
}

}  // namespace mm::ebpf
