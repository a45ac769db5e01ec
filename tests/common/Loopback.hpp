// Two transport connections joined by an in-memory, lossless datagram
// link, for tests of what runs on top of the streams (the page path):
// pump() moves everything queued both ways until nothing moves.
#pragma once

#include <cstring>
#include <deque>
#include <vector>

#include "dataplane/transport/Connection.hpp"

namespace mm::test {

class Loopback {
 public:
  class End : public transport::DatagramPort {
   public:
    End(std::deque<std::vector<uint8_t>>& in, std::deque<std::vector<uint8_t>>& out, uint32_t ip)
        : in_(in), out_(out) {
      addr_.ip = ip;
      addr_.udp_port = 7470;
    }
    uint16_t rx_burst(std::span<transport::RxDatagram> rx) override {
      held_.clear();
      while (held_.size() < rx.size() && !in_.empty()) {
        held_.push_back(std::move(in_.front()));
        in_.pop_front();
      }
      for (size_t i = 0; i < held_.size(); ++i) rx[i] = {held_[i].data(), uint32_t(held_[i].size()), {}, 0};
      return uint16_t(held_.size());
    }
    void rx_release() override { held_.clear(); }
    uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override {
      for (const auto& p : pkts) {
        std::vector<uint8_t> d(p.head_len + p.body_len);
        std::memcpy(d.data(), p.head, p.head_len);
        if (p.body_len) std::memcpy(d.data() + p.head_len, p.body, p.body_len);
        out_.push_back(std::move(d));
      }
      return uint16_t(pkts.size());
    }
    uint32_t max_datagram() const override { return 9000 - 28; }
    transport::PeerAddress local_address() const override { return addr_; }
    // With own_buffers, send windows live in buffers of this port, each
    // apart from the others (as mbufs are), so a message spans separate
    // slots; without, the sender keeps its window on its heap.
    bool alloc_tx_buffers(std::span<transport::TxBuffer> out, uint32_t room) override {
      if (!own_buffers) return false;
      for (auto& b : out) {
        buffers_.emplace_back(transport::kTxHeadroom + room + 64);  // a gap after each
        b.handle = &buffers_.back();
        b.payload = buffers_.back().data() + transport::kTxHeadroom;
      }
      return true;
    }
    bool own_buffers = false;

   private:
    std::deque<std::vector<uint8_t>> buffers_;
    std::deque<std::vector<uint8_t>>& in_;
    std::deque<std::vector<uint8_t>>& out_;
    std::vector<std::vector<uint8_t>> held_;
    transport::PeerAddress addr_;
  };

  static transport::TransportConfig config() {
    transport::TransportConfig c;
    c.window = 256;
    c.max_payload = 9000 - 28 - uint32_t(wire::kHeaderSize);
    return c;
  }

  explicit Loopback(uint16_t streams, size_t max_message = 1 << 20, bool port_buffers = false)
      : a(config(), 1, streams, max_message, 0), b(config(), 1, streams, max_message, 0) {
    a.set_peer(port_b.local_address());
    b.set_peer(port_a.local_address());
    if (port_buffers) {
      port_a.own_buffers = port_b.own_buffers = true;
      a.set_port_buffers(&port_a);
      b.set_port_buffers(&port_b);
    }
  }

  // Sends what both ends have queued and feeds what arrives, once.
  void step(uint64_t now) {
    a.flush(now, port_a);
    b.flush(now, port_b);
    feed(port_b, b, now);
    feed(port_a, a, now);
  }

 private:
  // Declared before the connections, which may keep their send windows in
  // the ports' buffers: the ports outlive them.
  std::deque<std::vector<uint8_t>> a_to_b_, b_to_a_;
  End port_a{b_to_a_, a_to_b_, 0x0A000001};
  End port_b{a_to_b_, b_to_a_, 0x0A000002};

 public:
  transport::Connection a, b;

 private:
  static void feed(End& port, transport::Connection& c, uint64_t now) {
    transport::RxDatagram rx[32];
    for (uint16_t n; (n = port.rx_burst(rx)) > 0;) {
      for (uint16_t i = 0; i < n; ++i) {
        wire::Header h;
        std::span<const uint8_t> p;
        if (wire::decode_packet({rx[i].data, rx[i].len}, h, p) == wire::DecodeError::ok) c.on_packet(h, p, now);
      }
      port.rx_release();
    }
  }
};

}  // namespace mm::test
