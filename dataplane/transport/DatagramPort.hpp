// The abstract datagram port the reliable transport sends and receives MMP
// datagrams through. dataplane/port implements it over a DPDK ethdev (UDP/IPv4
// encapsulation); unit tests implement it in memory. Calls are per burst:
// tx_burst() may only queue what it accepts, and tx_flush() (once per worker
// loop iteration) hands whatever is queued to the NIC.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace mm::transport {

// Where a datagram comes from or goes to on the fabric.
struct PeerAddress {
  std::array<uint8_t, 6> mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint32_t ip = 0;         // IPv4, host byte order
  uint16_t udp_port = 0;   // destination (or, on receive, source) UDP port
  bool operator==(const PeerAddress&) const = default;
};

std::string to_string(const PeerAddress& a);

// One received UDP payload (an MMP datagram). `data` stays valid until the
// port's rx_release() is called.
struct RxDatagram {
  const uint8_t* data = nullptr;
  uint32_t len = 0;
  PeerAddress from;      // source MAC / IP / UDP source port
  uint16_t dst_port = 0; // UDP destination port it arrived on
};

// Bytes a port buffer keeps free ahead of its payload: the frame headers
// the port writes (Ethernet, IPv4, UDP: 42, with room for a VLAN tag) and
// the MMP header (32).
inline constexpr uint32_t kTxHeadroom = 128;

// A buffer the port can send without copying its payload (an mbuf): the
// transport keeps its send window in these, so that a packet is written
// once, sent by reference, and sent again by reference.
struct TxBuffer {
  void* handle = nullptr;      // the port's
  uint8_t* payload = nullptr;  // kTxHeadroom bytes into the buffer
};

// One datagram to send: head (MMP header) then body (payload) in a frame
// addressed to `to`, using `src_port` as UDP source port. With `buffer`
// (body is that port buffer's payload) the port sends the buffer itself
// when nothing else holds it, else it copies as for any other datagram.
// With `handover` the buffer is a frame from alloc_tx_frames() that the
// port takes over once it accepts the datagram (no reference added).
struct TxDatagram {
  const PeerAddress* to = nullptr;
  uint16_t src_port = 0;
  const uint8_t* head = nullptr;
  uint32_t head_len = 0;
  const uint8_t* body = nullptr;
  uint32_t body_len = 0;
  void* buffer = nullptr;
  bool handover = false;
};

class DatagramPort {
 public:
  virtual ~DatagramPort() = default;
  // Receives up to out.size() datagrams. Their data stays valid until
  // rx_release(). Returns how many were stored in out.
  virtual uint16_t rx_burst(std::span<RxDatagram> out) = 0;
  virtual void rx_release() = 0;
  // Queues datagrams for transmission; returns how many were accepted (a
  // prefix of pkts). The rest may be offered again later. An accepted
  // datagram has been copied: its head and body may be reused at once.
  virtual uint16_t tx_burst(std::span<const TxDatagram> pkts) = 0;
  // Sends what tx_burst() queued and has not sent yet (a port may hold
  // accepted datagrams until a full burst is ready). Called once per loop.
  virtual void tx_flush() {}
  // Fills `out` with port buffers whose payload holds `room` bytes; false
  // (nothing allocated) when the port has none to give. Cold path: a
  // sender takes its whole window at once and keeps it.
  virtual bool alloc_tx_buffers(std::span<TxBuffer> out, uint32_t room) {
    (void)out;
    (void)room;
    return false;
  }
  virtual void free_tx_buffers(std::span<const TxBuffer> bufs) { (void)bufs; }
  // Per burst (at most 32): fresh frames for a sender that writes every
  // transmission anew (an encrypted session: each one is sealed with its
  // own nonce straight into its frame). Returns out.size(), or 0 (nothing
  // allocated) when the port has none. Frames the port did not accept
  // go back with free_tx_buffers().
  virtual uint16_t alloc_tx_frames(std::span<TxBuffer> out, uint32_t room) {
    (void)out;
    (void)room;
    return 0;
  }
  // Largest UDP payload (MMP header + payload) this port carries: mtu - 20 - 8.
  virtual uint32_t max_datagram() const = 0;
  // This port's own fabric address (MAC, IPv4, base UDP port).
  virtual PeerAddress local_address() const = 0;
};

}  // namespace mm::transport
