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
#include <string_view>
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
  uint32_t line_rate_gbps = 0;  // what the NIC can carry; 0 = not stated
  struct Port {
    std::string pmd;       // vdevs: net_af_packet | net_af_xdp | net_memif | net_ring;
                           // PCI: mlx5_pci | net_ice
    std::string device;    // PCI address, for PCI PMDs only
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
  struct Offload {
    // Compression engine for the page pipeline: none, compress_isal
    // (software, a vdev), compress_qat or mlx5_pci (hardware, PCI).
    std::string compressdev = "none";
    std::string compress_device;  // PCI address for hardware engines
    bool udp_checksum = false;     // let the NIC fill UDP checksums
  } offload;

  bool is_pci() const { return !port.device.empty(); }
};

// Loads and validates `file`; `vars` fill the `{NAME}` placeholders of
// port.devargs declared under [vars.NAME]; `builtins` (e.g. ebpf_dir, set by
// memmotiond) may be used as placeholders without a declaration. Throws
// ProfileError.
NicProfile load_profile(const std::filesystem::path& file,
                        const std::map<std::string, std::string>& vars,
                        const std::map<std::string, std::string>& builtins = {});

// The offset of the first byte of `text` that is not valid UTF-8 (an
// overlong form, a surrogate, past U+10FFFF or a cut sequence), or npos.
// TOML files must be UTF-8, and toml11 3.7 reads past the end of its
// buffer on some invalid sequences inside a literal string (found by
// fuzz_nic_profile), so every TOML text is checked with this first.
size_t first_invalid_utf8(std::string_view text);
// Throws std::invalid_argument("not UTF-8 at byte N") where that finds one:
// what every TOML reader calls, inside the try that wraps toml::parse.
void require_utf8(std::string_view text);

// The same from the profile's text; `file` names it in errors.
NicProfile parse_profile(std::string_view text, const std::filesystem::path& file,
                         const std::map<std::string, std::string>& vars,
                         const std::map<std::string, std::string>& builtins = {});

// argv for rte_eal_init: program name, file prefix, the profile's EAL
// arguments (always with --no-pci), lcores and the port's --vdev.
std::vector<std::string> eal_arguments(const NicProfile& p, const std::string& file_prefix);

// The ethdev name of the profile's port: "<pmd>0" for a vdev, the PCI
// address for a PCI device.
std::string vdev_name(const NicProfile& p);

}  // namespace mm::port
