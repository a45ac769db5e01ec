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
  uint64_t tx_full = 0;       // bursts the PMD took only part of (TX ring full; the rest waits)
  uint64_t tx_nombuf = 0;     // mbuf allocation failures on transmit
  uint64_t rx_not_mmp = 0;    // not IPv4/UDP to our port range: freed
  uint64_t rx_malformed = 0;  // truncated or inconsistent headers: freed
  uint64_t tx_by_reference = 0;  // frames sent from a send-window buffer, payload not copied
  uint64_t tx_copied_busy = 0;   // window buffer still held by an earlier send: copied instead

  PortStats& operator+=(const PortStats& o) {
    rx_frames += o.rx_frames;
    rx_bytes += o.rx_bytes;
    tx_frames += o.tx_frames;
    tx_bytes += o.tx_bytes;
    tx_full += o.tx_full;
    tx_nombuf += o.tx_nombuf;
    rx_not_mmp += o.rx_not_mmp;
    rx_malformed += o.rx_malformed;
    tx_by_reference += o.tx_by_reference;
    tx_copied_busy += o.tx_copied_busy;
    return *this;
  }
};

class EthPort;

// One RX/TX queue pair of the fabric port, owned by one worker lcore.
// Implements the transport's DatagramPort: bursts of 32, no allocation,
// locks or exceptions on the burst path. Transmit is buffered: every
// stream of every session adds its datagrams to one pending burst, which
// goes to the PMD when it is full or at tx_flush() (once per worker loop),
// so the NIC sees full bursts instead of one small burst per stream.
// Ethernet/IPv4/UDP headers come from a template built once per peer.
class EthQueue final : public transport::DatagramPort {
 public:
  static constexpr uint16_t kBurst = 32;
  // Datagrams accepted and not yet taken by the PMD: two bursts, so a full
  // burst can go while the next one fills.
  static constexpr uint16_t kTxPending = 2 * kBurst;

  EthQueue(const EthPort& port, uint16_t queue);
  ~EthQueue() override;
  EthQueue(const EthQueue&) = delete;
  EthQueue& operator=(const EthQueue&) = delete;

  uint16_t rx_burst(std::span<transport::RxDatagram> out) override;
  void rx_release() override;
  uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override;
  void tx_flush() override;
  bool alloc_tx_buffers(std::span<transport::TxBuffer> out, uint32_t room) override;
  void free_tx_buffers(std::span<const transport::TxBuffer> bufs) override;
  uint16_t alloc_tx_frames(std::span<transport::TxBuffer> out, uint32_t room) override;
  uint32_t max_datagram() const override;
  transport::PeerAddress local_address() const override;

  uint16_t id() const { return queue_; }
  PortStats stats() const;

 private:
  // The 42 bytes of Ethernet + IPv4 + UDP header for one peer and source
  // port, with the IPv4 checksum of every field but length and ID summed.
  struct HeaderTemplate {
    transport::PeerAddress to;
    uint16_t src_port = 0;
    bool valid = false;
    uint32_t partial_sum = 0;
    std::array<uint8_t, 42> bytes{};
  };
  const HeaderTemplate& header_for(const transport::PeerAddress& to, uint16_t src_port);
  // Hands pending frames to the PMD; what it does not take stays pending.
  void send_pending();

  const EthPort& port_;
  uint16_t queue_;
  uint16_t ip_id_ = 0;
  // Templates for the last few (peer, source port) pairs: a session's
  // streams use distinct source ports, so one per stream in use.
  static constexpr uint32_t kTemplates = 32;
  std::array<HeaderTemplate, kTemplates> templates_{};
  std::array<rte_mbuf*, kTxPending> pending_{};
  uint16_t pending_count_ = 0;
  std::array<rte_mbuf*, kBurst> held_{};
  uint16_t held_count_ = 0;
  std::vector<uint8_t> scratch_;  // kBurst frames, for multi-segment mbufs
  struct Counters {
    std::atomic<uint64_t> rx_frames{0}, rx_bytes{0}, tx_frames{0}, tx_bytes{0}, tx_full{0},
        tx_nombuf{0}, rx_not_mmp{0}, rx_malformed{0}, tx_by_reference{0}, tx_copied_busy{0};
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
  void tx_flush() override { queues_[0]->tx_flush(); }
  bool alloc_tx_buffers(std::span<transport::TxBuffer> out, uint32_t room) override {
    return queues_[0]->alloc_tx_buffers(out, room);
  }
  void free_tx_buffers(std::span<const transport::TxBuffer> bufs) override { queues_[0]->free_tx_buffers(bufs); }
  uint16_t alloc_tx_frames(std::span<transport::TxBuffer> out, uint32_t room) override {
    return queues_[0]->alloc_tx_frames(out, room);
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
  // Send windows (transport::TxBuffer): apart from pool_, so that windows
  // full of unacknowledged packets can never leave receive without mbufs.
  rte_mempool* window_pool_ = nullptr;
  bool ipv4_cksum_offload_ = false;  // the NIC fills the IPv4 header checksum
  transport::PeerAddress local_;
  std::vector<std::unique_ptr<EthQueue>> queues_;
};

}  // namespace mm::port
