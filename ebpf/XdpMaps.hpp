// Finding and changing the maps of an XDP program that someone else
// attached (the DPDK af_xdp PMD loads mm_steer through `xdp_prog=`): look up
// the program on the interface, then its maps by name.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mm::ebpf {

class XdpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An fd of the map `name` of the XDP program attached to `iface` (in any
// mode). The caller closes it. Throws XdpError naming what is missing.
int attached_map_fd(const std::string& iface, const std::string& map_name);

// Sums a per-CPU array of u64 counters.
std::vector<uint64_t> read_percpu_counters(int map_fd, uint32_t entries);

}  // namespace mm::ebpf
