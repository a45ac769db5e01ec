// An in-memory datagram link for transport unit tests: two DatagramPort
// ends with latency, loss, reordering and duplication on a simulated clock.
// Real ports are exercised by the integration tests over memif and veth.
#pragma once

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <vector>

#include "dataplane/transport/DatagramPort.hpp"

namespace mm::test {

struct LinkFaults {
  double loss = 0;       // probability a datagram is dropped
  double reorder = 0;    // probability it is delayed past later ones
  double duplicate = 0;  // probability it arrives twice
  uint64_t latency_ns = 50'000;
  // Datagrams per second the link serializes (0: unlimited); those sent
  // faster queue behind each other, as on a real wire.
  uint64_t rate_pps = 0;
};

class FakeLink {
 public:
  class End : public transport::DatagramPort {
   public:
    End(FakeLink& link, int side) : link_(link), side_(side) {}
    uint16_t rx_burst(std::span<transport::RxDatagram> out) override {
      auto& q = link_.queues_[side_];
      uint16_t n = 0;
      held_.clear();
      while (n < out.size() && !q.empty() && q.begin()->first <= link_.now_) {
        held_.push_back(std::move(q.begin()->second));
        q.erase(q.begin());
        ++n;
      }
      for (uint16_t i = 0; i < n; ++i) {
        out[i].data = held_[i].data();
        out[i].len = uint32_t(held_[i].size());
        out[i].from = link_.addr_[1 - side_];
      }
      return n;
    }
    void rx_release() override { held_.clear(); }
    uint16_t tx_burst(std::span<const transport::TxDatagram> pkts) override {
      if (link_.blocked_[side_]) return 0;
      for (const auto& p : pkts) {
        std::vector<uint8_t> d(p.head_len + p.body_len);
        std::memcpy(d.data(), p.head, p.head_len);
        if (p.body_len) std::memcpy(d.data() + p.head_len, p.body, p.body_len);
        link_.send(1 - side_, std::move(d));
        ++sent_;
      }
      return uint16_t(pkts.size());
    }
    uint32_t max_datagram() const override { return 1500 - 28; }
    transport::PeerAddress local_address() const override { return link_.addr_[side_]; }
    uint64_t sent() const { return sent_; }

   private:
    FakeLink& link_;
    int side_;
    std::vector<std::vector<uint8_t>> held_;
    uint64_t sent_ = 0;
  };

  explicit FakeLink(LinkFaults f, uint32_t seed = 1) : faults_(f), rng_(seed) {
    addr_[0].ip = 0x0A000001;
    addr_[1].ip = 0x0A000002;
  }
  End& end(int side) { return side == 0 ? a_ : b_; }
  void advance(uint64_t ns) { now_ += ns; }
  uint64_t now() const { return now_; }
  // Cuts one direction (to simulate a dead peer): side's sends vanish.
  void cut(int side) { cut_[side] = true; }
  void restore(int side) { cut_[side] = false; }
  // Makes side's port refuse to transmit (a full TX ring).
  void block(int side, bool on) { blocked_[side] = on; }
  void set_faults(LinkFaults f) { faults_ = f; }
  uint64_t dropped() const { return dropped_; }

 private:
  void send(int to, std::vector<uint8_t> d) {
    if (cut_[1 - to] || coin(faults_.loss)) {
      ++dropped_;
      return;
    }
    uint64_t at = now_ + faults_.latency_ns;
    if (faults_.rate_pps > 0) {
      wire_free_[to] = std::max(wire_free_[to], now_) + 1'000'000'000 / faults_.rate_pps;
      at = wire_free_[to] + faults_.latency_ns;
    }
    if (coin(faults_.reorder)) at += faults_.latency_ns * (1 + rng_() % 8);
    if (coin(faults_.duplicate)) queues_[to].emplace(at + 1000, d);
    queues_[to].emplace(at, std::move(d));
  }
  bool coin(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  LinkFaults faults_;
  std::mt19937_64 rng_;
  uint64_t now_ = 1'000'000'000;
  uint64_t dropped_ = 0;
  uint64_t wire_free_[2] = {0, 0};  // when each direction's wire is free again
  bool cut_[2] = {false, false};
  bool blocked_[2] = {false, false};
  transport::PeerAddress addr_[2];
  std::multimap<uint64_t, std::vector<uint8_t>> queues_[2];
  End a_{*this, 0}, b_{*this, 1};
};

}  // namespace mm::test
