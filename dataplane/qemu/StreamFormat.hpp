// The seam between the page path and one QEMU version's migration stream
// format: everything the engine needs to know that a QEMU release may
// change — how a connection says which channel it is, the multifd init and
// packet layout, the order the destination QEMU wants its channels in, what
// marks a SYNC, the limits, and the main-channel parser that reads the
// RAM section's epochs. The engine (Session, MultifdSource,
// MultifdRebuilder) reaches QEMU's bytes only through a StreamFormat;
// dataplane/wire and dataplane/pages know nothing of QEMU. A newer format
// (QEMU 8.0's channel magic, 9.0's zero-page offsets in the packet header)
// is one more implementation here. Calls are per QEMU packet or per
// connection, never per page or datagram.
//
// QEMU 7.2 is the one built (dataplane/qemu/QEMU-7.2-STREAM.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "dataplane/qemu/ChannelClassifier.hpp"
#include "dataplane/qemu/MainChannelObserver.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"

namespace mm::qemu {

class StreamFormat {
 public:
  virtual ~StreamFormat() = default;
  virtual std::string_view name() const = 0;

  // Channels. Bytes that always suffice to classify a connection (fewer
  // may do; classify() says need_more until they are there).
  virtual size_t classify_size() const = 0;
  virtual ChannelKind classify(std::span<const uint8_t> first_bytes) const = 0;
  // The destination QEMU must get its main channel connected before any
  // multifd channel (7.2 takes the first connection as the main one).
  virtual bool main_channel_first() const = 0;

  // Multifd channels: the init that opens one, then packets (header, then
  // the payload the header announces).
  virtual size_t init_size() const = 0;
  virtual MultifdError parse_init(std::span<const uint8_t> in, MultifdInit& out) const = 0;
  // The header's size from its first bytes (need_more until they are there).
  virtual MultifdError header_size(std::span<const uint8_t> in, size_t& size) const = 0;
  virtual MultifdError parse_header(std::span<const uint8_t> in, MultifdHeaderView& out) const = 0;
  // Writes the header for h with `offsets` as its pages into out (at least
  // h.header_size() bytes): the destination QEMU's packet.
  virtual void encode_header(const MultifdHeaderView& h, std::span<const uint64_t> offsets,
                             std::span<uint8_t> out) const = 0;
  virtual size_t max_header_size() const = 0;
  // Bytes a packet with pages_alloc page slots takes at most, header and
  // pages; 0 for a pages_alloc no packet of this format has.
  virtual size_t rebuilt_bound(uint32_t pages_alloc) const = 0;
  virtual uint32_t max_pages_per_packet() const = 0;
  // The pages per packet the release sends (input buffers are sized by it).
  virtual uint32_t typical_pages_per_packet() const = 0;
  virtual size_t page_size() const = 0;
  // A SYNC packet closes a channel's epoch; a packet QEMU compressed itself
  // (multifd-compression) is relayed as bytes, not taken apart.
  virtual bool is_sync(const MultifdHeaderFields& h) const = 0;
  virtual bool compressed_by_qemu(const MultifdHeaderFields& h) const = 0;
  // The header of a SYNC packet without pages, as the destination QEMU
  // reads one: what a failed session writes on each multifd channel so
  // that a QEMU waiting at a sync point for every channel reaches the main
  // channel's end instead of waiting for ever (QEMU-7.2-STREAM.md,
  // "A channel that ends at a sync point").
  virtual MultifdHeaderFields empty_sync(uint32_t pages_alloc, uint64_t packet_num) const = 0;

  // The main channel: a parser of its RAM section that reports pages it
  // carries and the epochs (RAM EOS markers) to `sink`.
  virtual std::unique_ptr<MainChannelObserver> observe_main(MainChannelObserver::Sink& sink) const = 0;
};

// QEMU 7.2 (Debian 12's qemu-system-x86).
const StreamFormat& qemu_7_2();

}  // namespace mm::qemu
