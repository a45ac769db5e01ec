// The DPDK ports the micro benchmarks run on: a NIC profile for a virtual
// PMD at a 9000-byte MTU, and one end of a back-to-back net_ring pair
// (in-process rings: the port's and our own cost, no device's).
#pragma once

#include <rte_eth_ring.h>
#include <rte_ring.h>

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/port/EthPort.hpp"
#include "dataplane/port/NicProfile.hpp"

namespace mm::bench {

inline constexpr uint32_t kMtu = 9000;

inline port::NicProfile bench_profile(const std::string& pmd) {
  port::NicProfile p;
  p.port.pmd = pmd;
  p.port.mtu = kMtu;
  p.port.set_mtu = false;
  p.port.mbuf_data_room = 10240;
  p.port.mbufs = 8191;
  p.port.rx_desc = 1024;
  p.port.tx_desc = 1024;
  return p;
}

// One end of a net_ring pair: receives from rx, sends into tx.
inline std::unique_ptr<port::EthPort> ring_port(const char* name, rte_ring* rx, rte_ring* tx, uint32_t ip) {
  const int id = rte_eth_from_rings(name, &rx, 1, &tx, 1, 0);
  if (id < 0) return nullptr;
  return std::make_unique<port::EthPort>(uint16_t(id), bench_profile("net_ring"), ip, 7470);
}

}  // namespace mm::bench
