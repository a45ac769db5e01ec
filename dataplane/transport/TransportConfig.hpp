// Tunables of the reliable stream transport; filled from the NIC profile's
// [transport] table (dataplane/wire/MMP.md "Transport rules" gives the rules).
#pragma once

#include <cstdint>

namespace mm::transport {

struct TransportConfig {
  uint32_t window = 1024;                  // packets per stream direction; power of two
  uint32_t max_payload = 8940;             // MMP payload bytes per packet (mtu - 28 - 32)
  uint32_t ack_every = 16;                 // ACK after this many data packets
  uint64_t ack_delay_ns = 200'000;         // ... or this long after the first unacked one
  uint64_t rto_min_ns = 1'000'000;         // retransmission timeout bounds
  uint64_t rto_max_ns = 100'000'000;
  uint64_t dead_timeout_ns = 5'000'000'000;  // no packet from the peer for this long: dead
  uint64_t keepalive_ns = 250'000'000;     // PROBE when nothing was sent for this long
  uint32_t cwnd_initial = 64;              // congestion window, packets
  uint32_t cwnd_min = 8;
};

}  // namespace mm::transport
