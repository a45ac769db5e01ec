// NIC profiles (nic-profiles/*.toml): what PMD to start with which devargs,
// queues, MTU, mempool, EAL options, lcore layout, idle policy and transport
// tunables. Loaded strictly: an unknown key, a wrong type or an out-of-range
// value is an error naming the file, the key and what is allowed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace mm::port {

class ProfileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NicProfile {
  std::filesystem::path file;
  std::string name;
  std::string description;
  struct Port {
    std::string pmd;       // net_af_packet | net_af_xdp | net_memif | net_ring
    std::string devargs;   // with {vars} already substituted
    uint32_t mtu = 9000;
    uint16_t rx_queues = 1, tx_queues = 1;
    uint16_t rx_desc = 1024, tx_desc = 1024;
    uint32_t mbuf_data_room = 10240;
    uint32_t mbufs = 16383;
    bool promiscuous = true;
    // false: do not set the MTU through ethdev; the PMD carries frames up to
    // `mtu` by its devargs and the interface (AF_PACKET reports a 1518-byte
    // max frame to ethdev yet its ring frames hold jumbo frames; memif has
    // no MTU at all).
    bool set_mtu = true;
  } port;
  struct Eal {
    std::vector<std::string> args;
    std::string lcores;
  } eal;
  struct Engine {
    uint32_t workers = 1;
    std::string idle = "backoff";  // backoff | spin
    uint32_t backoff_max_us = 1000;
  } engine;
  struct Transport {
    uint32_t window = 1024;
    uint32_t ack_every = 16;
    uint32_t rto_min_us = 1000;
    uint32_t rto_max_us = 100000;
    uint32_t dead_timeout_ms = 5000;
  } transport;
  struct Fabric {
    uint16_t udp_base_port = 7470;
  } fabric;
};

// Loads and validates `file`; `vars` fill the `{NAME}` placeholders of
// port.devargs declared under [vars.NAME]; `builtins` (e.g. ebpf_dir, set by
// memmotiond) may be used as placeholders without a declaration. Throws
// ProfileError.
NicProfile load_profile(const std::filesystem::path& file,
                        const std::map<std::string, std::string>& vars,
                        const std::map<std::string, std::string>& builtins = {});

// argv for rte_eal_init: program name, file prefix, the profile's EAL
// arguments (always with --no-pci), lcores and the port's --vdev.
std::vector<std::string> eal_arguments(const NicProfile& p, const std::string& file_prefix);

// The vdev (and ethdev) name the profile's port gets: "<pmd>0".
std::string vdev_name(const NicProfile& p);

}  // namespace mm::port
