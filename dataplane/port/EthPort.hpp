// The fabric port: one DPDK ethdev (a vdev from the NIC profile) carrying
// MMP in Ethernet/IPv4/UDP. Implements the transport's DatagramPort: bursts
// of 32, no allocation, locks or exceptions on the burst path.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/port/NicProfile.hpp"
#include "dataplane/transport/DatagramPort.hpp"

namespace mm::port {

struct PortStats {
  uint64_t rx_frames = 0, rx_bytes = 0;
  uint64_t tx_frames = 0, tx_bytes = 0;
  uint64_t tx_full = 0;       // frames the PMD did not take (TX ring full)
  uint64_t tx_nombuf = 0;     // mbuf allocation failures on transmit
  uint64_t rx_not_mmp = 0;    // not IPv4/UDP to our port range: freed
  uint64_t rx_malformed = 0;  // truncated or inconsistent headers: freed

  PortStats& operator+=(const PortStats& o) {
    rx_frames += o.rx_frames;
    rx_bytes += o.rx_bytes;
    tx_frames += o.tx_frames;
    tx_bytes += o.tx_bytes;
    tx_full += o.tx_full;
    tx_nombuf += o.tx_nombuf;
    rx_not_mmp += o.rx_not_mmp;
    rx_malformed += o.rx_malformed;
    return *this;
  }
};

class EthPort;

// One RX/TX queue pair of the fabric port, owned by one worker lcore.
// Implements the transport's DatagramPort: bursts of 32, no allocation,
// locks or exceptions on the burst path.
class EthQueue final : public transport::DatagramPort {
 public:
  static constexpr uint16_t kBurst = 32;

  EthQueue(const EthPort& port, uint16_t queue);
  ~EthQueue() override { rx_release(); }
  EthQueue(const EthQueue&) = delete;
  EthQueue& operator=(const EthQueue&) = delete;

  uint16_t rx_burst(std::span<transport::RxDatagram> out) override;
  void rx_release() override;
  uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override;
  uint32_t max_datagram() const override;
  transport::PeerAddress local_address() const override;

  uint16_t id() const { return queue_; }
  PortStats stats() const;

 private:
  const EthPort& port_;
  uint16_t queue_;
  uint16_t ip_id_ = 0;
  std::array<rte_mbuf*, kBurst> held_{};
  uint16_t held_count_ = 0;
  std::vector<uint8_t> scratch_;  // kBurst frames, for multi-segment mbufs
  struct Counters {
    std::atomic<uint64_t> rx_frames{0}, rx_bytes{0}, tx_frames{0}, tx_bytes{0}, tx_full{0},
        tx_nombuf{0}, rx_not_mmp{0}, rx_malformed{0};
  } c_;
};

// The fabric port: one DPDK ethdev (a vdev or PCI device from the NIC
// profile) carrying MMP in Ethernet/IPv4/UDP, with one EthQueue per worker.
// As a DatagramPort itself it is its queue 0 (single-worker use).
class EthPort final : public transport::DatagramPort {
 public:
  static constexpr uint16_t kBurst = EthQueue::kBurst;

  // Opens the profile's device (EAL must have been started with
  // eal_arguments()). ip is host order. Throws std::runtime_error naming the
  // PMD and what DPDK refused.
  EthPort(const NicProfile& profile, uint32_t ip, uint16_t udp_base_port);
  // Sets up an ethdev that already exists (e.g. made by rte_eth_from_rings)
  // with the profile's queues, mempool and MTU.
  EthPort(uint16_t port_id, const NicProfile& profile, uint32_t ip, uint16_t udp_base_port);
  ~EthPort() override;
  EthPort(const EthPort&) = delete;
  EthPort& operator=(const EthPort&) = delete;

  uint16_t rx_burst(std::span<transport::RxDatagram> out) override { return queues_[0]->rx_burst(out); }
  void rx_release() override { queues_[0]->rx_release(); }
  uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override {
    return queues_[0]->tx_burst(pkts);
  }
  uint32_t max_datagram() const override { return mtu_ - 28; }
  transport::PeerAddress local_address() const override { return local_; }

  uint16_t queues() const { return uint16_t(queues_.size()); }
  EthQueue& queue(uint16_t q) { return *queues_[q]; }
  PortStats stats() const;  // summed over queues
  std::string describe() const;

 private:
  friend class EthQueue;
  uint16_t port_id_ = 0;
  std::string pmd_;
  uint32_t mtu_;
  uint16_t udp_base_, udp_end_;
  rte_mempool* pool_ = nullptr;
  transport::PeerAddress local_;
  std::vector<std::unique_ptr<EthQueue>> queues_;
};

}  // namespace mm::port
