#include "dataplane/port/EthPort.hpp"

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_udp.h>

#include <cassert>
#include <cstring>
#include <stdexcept>

namespace mm::port {

namespace {

constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherVlan = 0x8100;
constexpr uint32_t kEthHeader = 14;

inline uint16_t be16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

[[noreturn]] void refuse(const std::string& pmd, const std::string& what, int rc) {
  throw std::runtime_error(pmd + ": " + what + " failed: " + rte_strerror(rc < 0 ? -rc : rc));
}

void add_relaxed(std::atomic<uint64_t>& a, uint64_t n) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // single writer
}

}  // namespace

namespace {
uint16_t port_by_name(const NicProfile& profile) {
  const std::string name = vdev_name(profile);
  uint16_t id = 0;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &id) != 0) {
    throw std::runtime_error(profile.port.pmd + ": DPDK created no port " + name +
                             " (check port.devargs '" + profile.port.devargs +
                             "' and the interface it names)");
  }
  return id;
}
}  // namespace

EthPort::EthPort(const NicProfile& profile, uint32_t ip, uint16_t udp_base_port)
    : EthPort(port_by_name(profile), profile, ip, udp_base_port) {}

EthPort::EthPort(uint16_t port_id, const NicProfile& profile, uint32_t ip, uint16_t udp_base_port)
    : port_id_(port_id),
      pmd_(profile.port.pmd),
      mtu_(profile.port.mtu),
      udp_base_(udp_base_port),
      udp_end_(uint16_t(udp_base_port + profile.port.rx_queues)) {
  if (profile.port.rx_queues != profile.port.tx_queues) {
    throw std::runtime_error(pmd_ + ": rx_queues and tx_queues must be equal (one pair per worker)");
  }
  const std::string pool_name = "mm_pool_" + std::to_string(port_id_);
  pool_ = rte_pktmbuf_pool_create(pool_name.c_str(), profile.port.mbufs, 256, 0,
                                  uint16_t(profile.port.mbuf_data_room + RTE_PKTMBUF_HEADROOM),
                                  int(rte_socket_id()));
  if (!pool_) refuse(pmd_, "creating " + std::to_string(profile.port.mbufs) + " mbufs", rte_errno);
  // Half as many again for send windows; a stream the pool cannot serve
  // keeps its window on the heap and is sent by copy.
  const std::string window_name = "mm_window_" + std::to_string(port_id_);
  window_pool_ = rte_pktmbuf_pool_create(window_name.c_str(), profile.port.mbufs / 2, 0, 0,
                                         uint16_t(profile.port.mbuf_data_room + RTE_PKTMBUF_HEADROOM),
                                         int(rte_socket_id()));

  // Configure at the default MTU, then raise it with rte_eth_dev_set_mtu
  // (which also sets a kernel interface's MTU), unless the profile says the
  // PMD's frames are sized by its devargs instead (set_mtu = false).
  rte_eth_conf conf{};
  // IPv4 header checksums go to the NIC where it can fill them (real
  // NICs); the virtual PMDs have no such offload and get them computed.
  rte_eth_dev_info info{};
  if (rte_eth_dev_info_get(port_id_, &info) == 0 &&
      (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM)) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
    ipv4_cksum_offload_ = true;
  }
  int rc = rte_eth_dev_configure(port_id_, profile.port.rx_queues, profile.port.tx_queues, &conf);
  if (rc != 0) refuse(pmd_, "configuring the port", rc);
  uint16_t rxd = profile.port.rx_desc, txd = profile.port.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &rxd, &txd);
  for (uint16_t q = 0; q < profile.port.rx_queues; ++q) {
    rc = rte_eth_rx_queue_setup(port_id_, q, rxd, rte_eth_dev_socket_id(port_id_), nullptr, pool_);
    if (rc != 0) refuse(pmd_, "rx queue " + std::to_string(q) + " setup", rc);
  }
  for (uint16_t q = 0; q < profile.port.tx_queues; ++q) {
    rc = rte_eth_tx_queue_setup(port_id_, q, txd, rte_eth_dev_socket_id(port_id_), nullptr);
    if (rc != 0) refuse(pmd_, "tx queue " + std::to_string(q) + " setup", rc);
  }
  rc = !profile.port.set_mtu ? 0 : rte_eth_dev_set_mtu(port_id_, uint16_t(mtu_));
  if (rc == -ENOTSUP) {
    uint16_t current = 0;
    rte_eth_dev_get_mtu(port_id_, &current);
    if (current < mtu_) {
      throw std::runtime_error(pmd_ + ": cannot set mtu " + std::to_string(mtu_) +
                               " and the port has only " + std::to_string(current));
    }
  } else if (rc != 0) {
    refuse(pmd_, "setting mtu " + std::to_string(mtu_) + " (is the interface's own MTU or the PMD's "
                 "frame size too small?)", rc);
  }
  rc = rte_eth_dev_start(port_id_);
  if (rc != 0) refuse(pmd_, "starting the port", rc);
  if (profile.port.promiscuous) rte_eth_promiscuous_enable(port_id_);  // not every PMD can
  rte_ether_addr mac;
  rte_eth_macaddr_get(port_id_, &mac);
  std::memcpy(local_.mac.data(), mac.addr_bytes, 6);
  local_.ip = ip;
  local_.udp_port = udp_base_port;
  for (uint16_t q = 0; q < profile.port.rx_queues; ++q) queues_.push_back(std::make_unique<EthQueue>(*this, q));
}

EthPort::~EthPort() {
  queues_.clear();  // returns held mbufs
  rte_eth_dev_stop(port_id_);
  rte_eth_dev_close(port_id_);
  if (pool_) rte_mempool_free(pool_);
  if (window_pool_) rte_mempool_free(window_pool_);
}

EthQueue::EthQueue(const EthPort& port, uint16_t queue)
    : port_(port), queue_(queue), scratch_(size_t(kBurst) * (port.mtu_ + 64)) {}

EthQueue::~EthQueue() {
  rx_release();
  // One last try, then whatever the PMD still refuses is freed.
  send_pending();
  if (pending_count_) rte_pktmbuf_free_bulk(pending_.data(), pending_count_);
  pending_count_ = 0;
}

uint32_t EthQueue::max_datagram() const { return port_.mtu_ - 28; }
transport::PeerAddress EthQueue::local_address() const { return port_.local_; }

uint16_t EthQueue::rx_burst(std::span<transport::RxDatagram> out) {
  rx_release();
  rte_mbuf* m[kBurst];
  const uint16_t want = uint16_t(std::min<size_t>(out.size(), kBurst));
  const uint16_t n = rte_eth_rx_burst(port_.port_id_, queue_, m, want);
  uint16_t k = 0;
  uint64_t bytes = 0, not_mmp = 0, malformed = 0;
  const size_t slot = port_.mtu_ + 64;
  for (uint16_t i = 0; i < n; ++i) {
    const uint32_t len = rte_pktmbuf_pkt_len(m[i]);
    bytes += len;
    if (len > slot) {
      ++malformed;
      rte_pktmbuf_free(m[i]);
      continue;
    }
    // A frame chained over several segments is copied into scratch so
    // that the transport always sees contiguous bytes.
    const auto* f = static_cast<const uint8_t*>(rte_pktmbuf_read(m[i], 0, len, scratch_.data() + k * slot));
    uint32_t off = kEthHeader;
    bool ok = len >= kEthHeader + 20 + 8;
    uint16_t type = ok ? be16(f + 12) : 0;
    if (ok && type == kEtherVlan) {
      type = be16(f + 16);
      off += 4;
    }
    const uint8_t* ip = f + off;
    if (!ok || len < off + 28) {
      ++malformed;
    } else if (type != kEtherIpv4 || (ip[0] >> 4) != 4 || ip[9] != IPPROTO_UDP ||
               (be16(ip + 6) & 0x3FFF) != 0) {
      ++not_mmp;  // not IPv4, not UDP, or a fragment (MMP never fragments)
    } else {
      const uint32_t ihl = (ip[0] & 15u) * 4;
      const uint32_t total = be16(ip + 2);
      const uint8_t* udp = ip + ihl;
      if (ihl < 20 || total < ihl + 8 || off + total > len || be16(udp + 4) < 8 ||
          ihl + be16(udp + 4) > total) {
        ++malformed;
      } else if (const uint16_t dport = be16(udp + 2); dport < port_.udp_base_ || dport >= port_.udp_end_) {
        ++not_mmp;
      } else {
        transport::RxDatagram& d = out[k];
        d.data = udp + 8;
        d.len = be16(udp + 4) - 8u;
        std::memcpy(d.from.mac.data(), f + 6, 6);
        d.from.ip = be32(ip + 12);
        d.from.udp_port = be16(udp);
        d.dst_port = dport;
        held_[k++] = m[i];
        continue;
      }
    }
    rte_pktmbuf_free(m[i]);
  }
  held_count_ = k;
  if (n) {
    add_relaxed(c_.rx_frames, n);
    add_relaxed(c_.rx_bytes, bytes);
    if (not_mmp) add_relaxed(c_.rx_not_mmp, not_mmp);
    if (malformed) add_relaxed(c_.rx_malformed, malformed);
  }
  return k;
}

void EthQueue::rx_release() {
  if (held_count_) {
    rte_pktmbuf_free_bulk(held_.data(), held_count_);
    held_count_ = 0;
  }
}

namespace {
// One's-complement sum of big-endian 16-bit words (RFC 1071), unfolded.
uint32_t sum16(const uint8_t* p, size_t n) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += be16(p + i);
  return s;
}
uint16_t fold_checksum(uint32_t s) {
  while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
  return uint16_t(~s & 0xFFFF);
}
}  // namespace

const EthQueue::HeaderTemplate& EthQueue::header_for(const transport::PeerAddress& to, uint16_t src_port) {
  // Direct-mapped by source port: a session's streams each have their own.
  HeaderTemplate& t = templates_[src_port % kTemplates];
  if (t.valid && t.src_port == src_port && t.to == to) return t;
  t.to = to;
  t.src_port = src_port;
  t.valid = true;
  uint8_t* p = t.bytes.data();
  std::memcpy(p, to.mac.data(), 6);
  std::memcpy(p + 6, port_.local_.mac.data(), 6);
  p[12] = kEtherIpv4 >> 8;
  p[13] = kEtherIpv4 & 0xFF;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(p + kEthHeader);
  ip->version_ihl = 0x45;
  ip->type_of_service = 0;
  ip->total_length = 0;  // per packet
  ip->packet_id = 0;     // per packet
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->hdr_checksum = 0;
  ip->src_addr = rte_cpu_to_be_32(port_.local_.ip);
  ip->dst_addr = rte_cpu_to_be_32(to.ip);
  t.partial_sum = sum16(p + kEthHeader, 20);
  auto* udp = reinterpret_cast<rte_udp_hdr*>(p + kEthHeader + 20);
  udp->src_port = rte_cpu_to_be_16(src_port);
  udp->dst_port = rte_cpu_to_be_16(to.udp_port);
  udp->dgram_len = 0;    // per packet
  udp->dgram_cksum = 0;  // MMP carries its own CRC32C (dataplane/wire/MMP.md)
  return t;
}

static_assert(RTE_PKTMBUF_HEADROOM >= transport::kTxHeadroom, "window buffers keep kTxHeadroom before their payload");
static_assert(transport::kTxHeadroom >= kEthHeader + 4 + 28 + 32, "frame headers and the MMP header fit the headroom");

bool EthQueue::alloc_tx_buffers(std::span<transport::TxBuffer> out, uint32_t room) {
  if (!port_.window_pool_ || out.empty() || room + transport::kTxHeadroom > rte_pktmbuf_data_room_size(port_.window_pool_)) {
    return false;
  }
  std::vector<rte_mbuf*> m(out.size());
  if (rte_pktmbuf_alloc_bulk(port_.window_pool_, m.data(), unsigned(m.size())) != 0) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].handle = m[i];
    out[i].payload = static_cast<uint8_t*>(m[i]->buf_addr) + transport::kTxHeadroom;
  }
  return true;
}

void EthQueue::free_tx_buffers(std::span<const transport::TxBuffer> bufs) {
  // A buffer the PMD still holds goes back to the pool when it lets go.
  for (const auto& b : bufs) rte_pktmbuf_free(static_cast<rte_mbuf*>(b.handle));
}

uint16_t EthQueue::alloc_tx_frames(std::span<transport::TxBuffer> out, uint32_t room) {
  // From the frame pool every copied datagram comes from: these are sent
  // once and freed by the PMD, like a copy, minus the copy.
  if (out.empty() || out.size() > kBurst || room + transport::kTxHeadroom > rte_pktmbuf_data_room_size(port_.pool_)) {
    return 0;
  }
  rte_mbuf* m[kBurst];
  if (rte_pktmbuf_alloc_bulk(port_.pool_, m, unsigned(out.size())) != 0) return 0;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].handle = m[i];
    out[i].payload = static_cast<uint8_t*>(m[i]->buf_addr) + transport::kTxHeadroom;
  }
  return uint16_t(out.size());
}

uint16_t EthQueue::tx_burst(std::span<const transport::TxDatagram> pkts) {
  if (pending_count_ >= kBurst) send_pending();
  const uint16_t n = uint16_t(std::min<size_t>(pkts.size(), kTxPending - pending_count_));
  if (n == 0) return 0;
  // A window buffer nobody else holds goes out itself (headers written
  // into its headroom, one more reference); any other datagram is copied
  // into a fresh mbuf. Only this worker adds references, so a count of 1
  // cannot grow behind its back.
  bool by_ref[kTxPending];
  uint16_t copies = 0;
  for (uint16_t i = 0; i < n; ++i) {
    const transport::TxDatagram& d = pkts[i];
    auto* b = static_cast<rte_mbuf*>(d.buffer);
    by_ref[i] = b && (d.handover || rte_mbuf_refcnt_read(b) == 1) && d.head_len <= 32 &&
                d.body == static_cast<const uint8_t*>(b->buf_addr) + transport::kTxHeadroom;
    copies = uint16_t(copies + !by_ref[i]);
  }
  rte_mbuf* fresh[kTxPending];
  if (copies && rte_pktmbuf_alloc_bulk(port_.pool_, fresh, copies) != 0) {
    add_relaxed(c_.tx_nombuf, 1);
    return 0;
  }
  rte_mbuf** m = pending_.data() + pending_count_;
  uint16_t next_fresh = 0;
  uint64_t by_reference = 0, busy = 0;
  for (uint16_t i = 0; i < n; ++i) {
    const transport::TxDatagram& d = pkts[i];
    const uint32_t udp_len = 8 + d.head_len + d.body_len;
    const uint32_t frame = kEthHeader + 20 + udp_len;
    const HeaderTemplate& t = header_for(*d.to, d.src_port);
    uint8_t* p;
    if (by_ref[i]) {
      m[i] = static_cast<rte_mbuf*>(d.buffer);
      p = const_cast<uint8_t*>(d.body) - d.head_len - (kEthHeader + 28);
      m[i]->data_off = uint16_t(p - static_cast<uint8_t*>(m[i]->buf_addr));
      m[i]->nb_segs = 1;
      m[i]->next = nullptr;
      m[i]->ol_flags = 0;
      if (!d.handover) rte_mbuf_refcnt_update(m[i], 1);  // a handed-over frame is the PMD's now
      ++by_reference;
    } else {
      m[i] = fresh[next_fresh++];
      p = rte_pktmbuf_mtod(m[i], uint8_t*);
      busy += d.buffer != nullptr;
    }
    std::memcpy(p, t.bytes.data(), t.bytes.size());
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(p + kEthHeader);
    const uint16_t total = uint16_t(20 + udp_len);
    const uint16_t id = ip_id_++;
    ip->total_length = rte_cpu_to_be_16(total);
    ip->packet_id = rte_cpu_to_be_16(id);
    auto* udp = reinterpret_cast<rte_udp_hdr*>(p + kEthHeader + 20);
    udp->dgram_len = rte_cpu_to_be_16(uint16_t(udp_len));
    if (port_.ipv4_cksum_offload_) {
      m[i]->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
      m[i]->l2_len = kEthHeader;
      m[i]->l3_len = 20;
    } else {
      ip->hdr_checksum = rte_cpu_to_be_16(fold_checksum(t.partial_sum + total + id));
      assert(rte_raw_cksum(ip, 20) == 0xFFFF);  // a valid header sums to all ones
    }
    uint8_t* payload = p + kEthHeader + 28;
    std::memcpy(payload, d.head, d.head_len);
    if (d.body_len && !by_ref[i]) std::memcpy(payload + d.head_len, d.body, d.body_len);
    if (d.handover && !by_ref[i]) rte_pktmbuf_free(static_cast<rte_mbuf*>(d.buffer));  // taken over all the same
    m[i]->data_len = uint16_t(frame);
    m[i]->pkt_len = frame;
  }
  if (by_reference) add_relaxed(c_.tx_by_reference, by_reference);
  if (busy) add_relaxed(c_.tx_copied_busy, busy);
  pending_count_ = uint16_t(pending_count_ + n);
  if (pending_count_ >= kBurst) send_pending();
  return n;
}

void EthQueue::send_pending() {
  if (pending_count_ == 0) return;
  const uint16_t sent = rte_eth_tx_burst(port_.port_id_, queue_, pending_.data(), pending_count_);
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < sent; ++i) bytes += rte_pktmbuf_pkt_len(pending_[i]);
  if (sent < pending_count_) {
    // The PMD's ring is full: the rest stays queued (it was accepted).
    std::memmove(pending_.data(), pending_.data() + sent, (pending_count_ - sent) * sizeof(rte_mbuf*));
    add_relaxed(c_.tx_full, 1);
  }
  pending_count_ = uint16_t(pending_count_ - sent);
  if (sent) {
    add_relaxed(c_.tx_frames, sent);
    add_relaxed(c_.tx_bytes, bytes);
  }
}

void EthQueue::tx_flush() { send_pending(); }

PortStats EthQueue::stats() const {
  auto r = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {r(c_.rx_frames),  r(c_.rx_bytes),     r(c_.tx_frames),       r(c_.tx_bytes),
          r(c_.tx_full),    r(c_.tx_nombuf),    r(c_.rx_not_mmp),      r(c_.rx_malformed),
          r(c_.tx_by_reference), r(c_.tx_copied_busy)};
}

PortStats EthPort::stats() const {
  PortStats sum;
  for (const auto& q : queues_) sum += q->stats();
  return sum;
}

std::string EthPort::describe() const {
  char mac[32];
  std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", local_.mac[0], local_.mac[1],
                local_.mac[2], local_.mac[3], local_.mac[4], local_.mac[5]);
  return pmd_ + " port " + std::to_string(port_id_) + " mac " + mac + " ip " +
         std::to_string(local_.ip >> 24) + "." + std::to_string((local_.ip >> 16) & 255) + "." +
         std::to_string((local_.ip >> 8) & 255) + "." + std::to_string(local_.ip & 255) + " mtu " +
         std::to_string(mtu_) + " queues " + std::to_string(queues_.size());
}

}  // namespace mm::port
