#include "dataplane/qemu/ChannelRelay.hpp"

#include <algorithm>
#include <array>

#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/wire/Records.hpp"

namespace mm::qemu {

namespace {
constexpr uint32_t kReadSlots = 32;  // packets one readv() may fill
}  // namespace

bool ChannelRelay::write_packet(std::span<const std::span<const uint8_t>> parts) {
  if (remote_fin_) {
    error_ = "channel: data after FIN";
    return false;
  }
  // Written from where the parts are; only what the socket leaves is
  // copied into the channel's buffer (the caller checked out_room()).
  if (!parts.empty() && !chan_->send(parts)) {
    error_ = "channel: rebuilt packet larger than its bound";
    return false;
  }
  return true;
}

bool ChannelRelay::send_fin(transport::MessageSender& tx) {
  if (local_fin_) return true;
  uint8_t fin[wire::kFinRecordSize];
  wire::RecordWriter w(fin);
  w.put_fin();
  if (!tx.submit_message({fin, w.size()})) return false;
  local_fin_ = true;
  return true;
}

size_t ChannelRelay::pump_in(transport::MessageSender& tx, uint32_t ahead) {
  if (!chan_ || local_fin_ || !chan_->is_open()) return 0;
  const uint32_t room = tx.unacked() >= ahead ? 0 : ahead - tx.unacked();
  const uint32_t slots = std::min({tx.free_slots(), kReadSlots, room});
  if (slots == 0) return 0;
  std::array<std::span<uint8_t>, kReadSlots> slot;
  std::array<std::span<uint8_t>, kReadSlots> bufs;
  const size_t cap = tx.slot_size() - wire::kBytesRecordOverhead;
  tx.reserve_slots({slot.data(), slots});
  for (uint32_t i = 0; i < slots; ++i) bufs[i] = slot[i].subspan(wire::kBytesRecordOverhead, cap);
  const ssize_t r = chan_->read_into({bufs.data(), slots});
  if (r == ByteChannel::kAgain) return 0;
  if (r == ByteChannel::kEof || r == ByteChannel::kError) {
    if (r == ByteChannel::kError) error_ = chan_->error_text();
    send_fin(tx);  // a slot is free (slots > 0 above)
    return 0;
  }
  // Each filled slot becomes a one-packet message with one BYTES record;
  // the bytes are already in place behind the record header.
  size_t left = size_t(r);
  std::array<uint32_t, kReadSlots> lens;
  uint32_t filled = 0;
  for (; left > 0; ++filled) {
    const size_t n = std::min(left, cap);
    if (tap_) tap_(bufs[filled].first(n));
    wire::RecordWriter w(slot[filled]);
    w.put_bytes_header(n);
    lens[filled] = uint32_t(w.size());
    left -= n;
  }
  tx.commit_slots({lens.data(), filled}, /*each_a_message=*/true);
  return size_t(r);
}

bool ChannelRelay::write_records(std::span<const uint8_t> message) {
  if (!message.empty() && message[0] == uint8_t(wire::RecordType::multifd_begin)) {
    error_ = "channel: page records on a stream that carries none";
    return false;
  }
  // Check the whole message first so it is taken all or nothing.
  wire::RecordReader reader(message);
  wire::Record rec;
  size_t bytes = 0;
  bool fin = false;
  for (;;) {
    const wire::RecordError e = reader.next(rec);
    if (e == wire::RecordError::end) break;
    if (e != wire::RecordError::ok) {
      error_ = "channel: " + std::string(wire::to_string(e)) + " at offset " + std::to_string(reader.offset());
      return false;
    }
    if (fin) {
      error_ = "channel: records after FIN";
      return false;
    }
    if (rec.type == wire::RecordType::bytes) bytes += rec.body.size();
    if (rec.type == wire::RecordType::fin) fin = true;
    if (rec.type == wire::RecordType::store_table && !table_sink_) {
      error_ = "channel: STORE_TABLE on a channel that takes none";
      return false;
    }
    if (rec.type != wire::RecordType::bytes && rec.type != wire::RecordType::fin &&
        rec.type != wire::RecordType::sync && rec.type != wire::RecordType::store_table) {
      error_ = "channel: record type " + std::to_string(int(rec.type)) + " outside a multifd packet";
      return false;
    }
  }
  if (remote_fin_ && (bytes > 0 || fin)) {
    error_ = "channel: data after FIN";
    return false;
  }
  if (bytes > 0 && out_capacity_ == 0) {
    error_ = "channel: the peer sent bytes for a QEMU channel that is only read";
    return false;
  }
  if (bytes > chan_->out_room()) return false;  // QEMU is slow: try later
  wire::RecordReader again(message);
  while (again.next(rec) == wire::RecordError::ok) {
    if (rec.type == wire::RecordType::bytes) {
      chan_->send(rec.body);
      if (out_tap_) out_tap_(rec.body);
    }
    if (rec.type == wire::RecordType::store_table) {
      if (std::string why = table_sink_(rec.body); !why.empty()) {
        error_ = "channel: " + why;
        return false;
      }
    }
  }
  if (fin) remote_fin_ = true;
  return true;
}

bool ChannelRelay::flush_out() {
  if (!chan_) return true;
  if (!error_.empty()) return false;
  if (!chan_->flush()) {
    error_ = chan_->error_text();
    return false;
  }
  if (remote_fin_ && !shut_wr_ && chan_->out_empty()) {
    chan_->shutdown_write();
    shut_wr_ = true;
  }
  return true;
}

bool ChannelRelay::pump_out(transport::MessageReceiver& rx) {
  if (!chan_) return true;
  auto sink = [&](std::span<const uint8_t> message) { return write_records(message); };
  if (rx.deliver_to(sink) < 0) {
    error_ = std::string("channel: ") + rx.error();
    return false;
  }
  return flush_out();
}

}  // namespace mm::qemu
