// The reliable message stream the page path is written against, one
// direction each: QEMU's bytes and page messages go into a MessageSender,
// the peer's come out of a MessageReceiver (dataplane/qemu ChannelRelay,
// dataplane/engine PageChannels). MMP over a DatagramPort is the one built
// (StreamSender, StreamReceiver). An RDMA RC queue pair would be another:
// its slots a registered ring that SENDs are posted from, commit_slots() a
// posted work request, deliver() its receive completions; reliability and
// order would then be the NIC's.
//
// The interface works on slots (what the transport sends one at a time:
// an MMP packet's payload) so that a message is written where it will be
// sent from. Calls are per batch of slots or per message, never per
// datagram.
#pragma once

#include <cstdint>
#include <span>

namespace mm::transport {

class MessageSender {
 public:
  virtual ~MessageSender() = default;
  virtual uint32_t slot_size() const = 0;   // payload bytes of one slot
  virtual uint32_t free_slots() const = 0;  // slots that can still be queued
  virtual uint32_t unacked() const = 0;     // queued and not acknowledged yet
  virtual uint32_t unsent() const = 0;      // queued and never transmitted yet
  // The next out.size() free slots (at most free_slots()), to be written in
  // place; they stay free until committed.
  virtual void reserve_slots(std::span<std::span<uint8_t>> out) = 0;
  // Queues the first lens.size() reserved slots, slot i holding lens[i]
  // bytes: each slot a message of its own, or all of them one message.
  virtual void commit_slots(std::span<const uint32_t> lens, bool each_a_message) = 0;
  // Queues a whole message by copy; false (nothing queued) when it does not
  // fit into the free slots.
  virtual bool submit_message(std::span<const uint8_t> message) = 0;
};

// A callable taking one delivered message, passed by reference (no
// allocation); false from it stops delivery, the message stays.
class MessageSink {
 public:
  template <class F>
  MessageSink(F& f)  // NOLINT: implicit on purpose, like std::function_ref
      : obj_(&f), call_([](void* o, std::span<const uint8_t> m) { return (*static_cast<F*>(o))(m); }) {}
  bool operator()(std::span<const uint8_t> m) const { return call_(obj_, m); }

 private:
  void* obj_;
  bool (*call_)(void*, std::span<const uint8_t>);
};

class MessageReceiver {
 public:
  virtual ~MessageReceiver() = default;
  // Hands over the complete messages in order while sink takes them.
  // Returns messages delivered, or -1 on a framing violation (error()).
  virtual int deliver_to(MessageSink sink) = 0;
  virtual const char* error() const = 0;
  // Nothing received is waiting to be delivered.
  virtual bool drained() const = 0;
};

}  // namespace mm::transport
