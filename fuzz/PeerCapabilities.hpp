// The capabilities a fuzzed daemon announces on the peer channel (and the
// seeds' peer announces): one host of a two-host fabric, as memmotiond
// fills them (control/memmotiond.cpp).
#pragma once

#include <string>

#include "control/PeerChannel.hpp"
#include "dataplane/wire/Mmp.hpp"

namespace mm::fuzz {

inline control::Capabilities peer_capabilities(int host) {
  control::Capabilities c;
  c.version = "0.1.0";
  c.mmp = wire::kVersion;
  c.mtu = 9000;
  c.queues = 2;
  c.ip = "10.77.1." + std::to_string(host);
  c.mac = "02:00:00:00:00:0" + std::to_string(host);
  c.udp_port = 7470;
  c.codecs = {"none", "lz4", "zstd"};
  return c;
}

}  // namespace mm::fuzz
