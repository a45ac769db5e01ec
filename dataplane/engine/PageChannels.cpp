#include "dataplane/engine/PageChannels.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/Records.hpp"

namespace mm::engine {

CodecSet::~CodecSet() = default;

pages::PageCodec* CodecSet::get(pages::CodecKind k, std::string* why) {
  switch (k) {
    case pages::CodecKind::raw: return nullptr;
    case pages::CodecKind::lz4:
      if (!lz4_) lz4_ = std::make_unique<pages::Lz4Codec>();
      return lz4_.get();
    case pages::CodecKind::zstd:
      if (!zstd_) zstd_ = std::make_unique<pages::ZstdCodec>(1);
      return zstd_.get();
    case pages::CodecKind::deflate:
      if (!deflate_ && deflate_error_.empty()) {
        if (compressdev_.empty()) {
          deflate_error_ = "this daemon has no compressdev (NIC profile [offload] compressdev)";
        } else {
          try {
            deflate_ = std::make_unique<pages::CompressdevDeflate>(compressdev_, queue_pair_);
          } catch (const std::exception& e) {
            deflate_error_ = e.what();
          }
        }
      }
      if (!deflate_ && why) *why = deflate_error_;
      return deflate_.get();
  }
  return nullptr;
}

namespace {
// Input is read in chunks of at most this much per read() (one QEMU 7.2
// packet is 1344 + 128 x 4096 bytes).
constexpr size_t kReadChunk = 256 << 10;
// The input buffer: room for several of the format's usual packets, so the
// read cursor runs over many packets before the unconsumed tail is moved
// to the front.
size_t input_buffer(const qemu::StreamFormat& f) {
  const size_t pages = f.typical_pages_per_packet();
  return 4 * (f.max_header_size() + pages * f.page_size());
}
// Messages one pump() may queue, so that one busy channel cannot starve
// the others of the worker.
constexpr int kMessagesPerPump = 4;
}  // namespace

MultifdSource::MultifdSource(uint16_t channel, const pages::PagePolicy& policy, pages::PageCodec* codec,
                             pages::UnchangedFilter* filter, size_t max_message, pages::PageCodec* heavy,
                             const qemu::StreamFormat& format)
    : format_(format),
      channel_(channel),
      max_message_(max_message),
      encoder_(policy, codec, filter),
      light_(policy.codec == pages::CodecKind::raw ? nullptr : codec),
      heavy_(policy.auto_codec ? heavy : nullptr),
      in_(input_buffer(format)),
      offsets_(std::make_unique<uint64_t[]>(format.max_pages_per_packet())) {}

void MultifdSource::consume(size_t n) {
  in_head_ += n;
  in_len_ -= n;
  if (in_len_ == 0) in_head_ = 0;  // free: nothing to move
}

void MultifdSource::make_room(size_t n) {
  if (in_head_ + n <= in_.size()) return;
  if (in_len_ > 0 && in_head_ > 0) std::memmove(in_.data(), in_.data() + in_head_, in_len_);
  in_head_ = 0;
  // Only a packet larger than QEMU 7.2 sends (pages_alloc > 128) grows it.
  if (n > in_.size()) in_.resize(n + kReadChunk);
}

bool MultifdSource::message_writer(transport::MessageSender& tx, size_t bound, wire::RecordWriter& w) {
  const uint32_t payload = tx.slot_size();
  const size_t packets = std::max<size_t>(1, (bound + payload - 1) / payload);
  if (packets > tx.free_slots() || packets > kMaxMessageSlots) return false;
  tx.reserve_slots({slots_.data(), packets});
  // One buffer when the slots lie back to back (checked, never assumed),
  // else the list of them.
  const std::span<uint8_t> first = slots_[0];
  const std::span<uint8_t> last = slots_[packets - 1];
  if (first.size() == payload && last.size() == payload &&
      last.data() == first.data() + (packets - 1) * size_t(payload)) {
    w = wire::RecordWriter(std::span<uint8_t>(first.data(), packets * size_t(payload)));
    return true;
  }
  w = wire::RecordWriter(std::span<const std::span<uint8_t>>(slots_.data(), packets));
  return true;
}

MultifdSource::Parsed MultifdSource::finish_message(transport::MessageSender& tx, size_t len) {
  // The framing submit_message() gives: full packets, then the rest.
  const uint32_t payload = tx.slot_size();
  size_t k = 0;
  for (size_t off = 0; off < len || k == 0; off += payload) lens_[k++] = uint32_t(std::min<size_t>(payload, len - off));
  tx.commit_slots({lens_.data(), k}, /*each_a_message=*/false);
  return Parsed::queued;
}

MultifdSource::Parsed MultifdSource::bytes_message(transport::MessageSender& tx, size_t n) {
  wire::RecordWriter w{std::span<uint8_t>()};
  if (!message_writer(tx, n + wire::kBytesRecordOverhead, w)) return Parsed::no_room;
  w.put_bytes({in_.data() + in_head_, n});
  consume(n);
  return finish_message(tx, w.size());
}

MultifdSource::Parsed MultifdSource::parse(const Gate& gate, transport::MessageSender& tx) {
  const uint8_t* in = in_.data() + in_head_;
  if (step_ == Step::init) {
    const size_t init_size = format_.init_size();
    if (in_len_ < init_size) return Parsed::need_input;
    qemu::MultifdInit init;
    const auto e = format_.parse_init({in, init_size}, init);
    if (e != qemu::MultifdError::ok) {
      fail("MultiFDInit: " + std::string(qemu::to_string(e)));
      return Parsed::error;
    }
    const Parsed r = bytes_message(tx, init_size);  // the destination QEMU checks it as is
    if (r != Parsed::no_room) step_ = Step::packets;
    return r;
  }
  if (step_ == Step::passthrough) {
    if (in_len_ == 0) return Parsed::need_input;
    return bytes_message(tx, std::min(in_len_, max_message_ - wire::kBytesRecordOverhead));
  }
  size_t hsize = 0;
  auto e = format_.header_size({in, in_len_}, hsize);
  if (e == qemu::MultifdError::need_more) return Parsed::need_input;
  if (e != qemu::MultifdError::ok) {
    fail("packet header: " + std::string(qemu::to_string(e)));
    return Parsed::error;
  }
  if (in_len_ < hsize) {
    make_room(hsize);
    return Parsed::need_input;
  }
  qemu::MultifdHeaderView h;
  e = format_.parse_header({in, hsize}, h);
  if (e != qemu::MultifdError::ok) {
    fail("packet header: " + std::string(qemu::to_string(e)));
    return Parsed::error;
  }
  if (format_.compressed_by_qemu(h)) {
    // QEMU compresses each channel as one stream across packets: its
    // pages cannot be taken apart, so the channel is relayed as bytes.
    step_ = Step::passthrough;
    return parse(gate, tx);
  }
  const size_t total = hsize + h.payload_size();
  if (in_len_ < total) {
    make_room(total);
    return Parsed::need_input;
  }
  const size_t need = pages::PageEncoder::max_message(h.normal_pages);
  if (need > max_message_) {
    fail("packet of " + std::to_string(h.normal_pages) + " pages exceeds the largest message (" +
         std::to_string(max_message_) + " bytes)");
    return Parsed::error;
  }
  wire::RecordWriter w{std::span<uint8_t>()};
  if (!message_writer(tx, need, w)) return Parsed::no_room;
  for (uint32_t i = 0; i < h.normal_pages; ++i) offsets_[i] = wire::get_be64(h.offsets_be + 8 * size_t(i));
  pages::PacketView v;
  v.flags = h.flags;
  v.pages_alloc = h.pages_alloc;
  v.packet_num = h.packet_num;
  v.ramblock = h.ramblock;
  v.offsets = {offsets_.get(), h.normal_pages};
  v.offsets_be = h.offsets_be;
  v.pages = in + hsize;
  const uint32_t epoch = syncs_;
  choose_codec();
  const SkipGate g = gate ? gate(epoch) : SkipGate{};
  encoder_.encode(v, epoch, g.skip, w, g.channels);
  if (format_.is_sync(h)) ++syncs_;
  consume(total);
  return finish_message(tx, w.size());
}

bool MultifdSource::pump(qemu::ChannelRelay& relay, transport::MessageSender& tx, const Gate& gate, bool& work,
                         uint32_t ahead) {
  qemu::ByteChannel* ch = relay.channel();
  if (!ch || relay.local_fin_queued()) return true;
  entry_unsent_ = tx.unsent();  // what the last flush could not send
  for (int sent = 0; sent < kMessagesPerPump;) {
    // Over the read-ahead budget: QEMU's next packet waits in its socket
    // (what QEMU can push is what the fabric drains).
    if (tx.unacked() >= ahead && !eof_) return true;
    switch (parse(gate, tx)) {
      case Parsed::error: return false;
      case Parsed::no_room: return true;  // window full: later
      case Parsed::queued:
        ++sent;
        work = true;
        continue;
      case Parsed::need_input: break;
    }
    if (eof_) {
      if (in_len_ > 0) return fail("QEMU closed the channel inside a packet (" + std::to_string(in_len_) + " bytes left)");
      if (relay.send_fin(tx)) work = true;
      return true;
    }
    if (!ch->is_open()) return true;
    if (in_head_ + in_len_ == in_.size()) make_room(in_len_ + kReadChunk);
    const size_t tail = in_head_ + in_len_;
    std::span<uint8_t> room(in_.data() + tail, std::min(in_.size() - tail, 2 * kReadChunk));
    const ssize_t r = ch->read_into({&room, 1});
    if (r == qemu::ByteChannel::kAgain) return true;
    if (r == qemu::ByteChannel::kError) return fail("reading from QEMU: " + ch->error_text());
    if (r == qemu::ByteChannel::kEof) {
      eof_ = true;
      continue;
    }
    in_len_ += size_t(r);
    work = true;
  }
  return true;
}

void MultifdSource::choose_codec() {
  if (!heavy_) return;
  // One sample per packet (not per call: a flow waiting on the pacer is
  // polled far more often than one busy compressing): did the packets
  // queued before this one still wait for the pacer or the window when
  // this one was taken? Then the link is what limits the flow.
  held_ = held_ - held_ / 8 + (entry_unsent_ > 0 ? kHeldOne / 8 : 0);
  // Hysteresis, so that a flow at the balance point does not flip per
  // packet; zstd only while the link clearly holds the flow back.
  if (!heavy_on_ && held_ > kHeldOne * 3 / 4) {
    heavy_on_ = true;
    encoder_.set_codec(heavy_, true);
  } else if (heavy_on_ && held_ < kHeldOne / 2) {
    heavy_on_ = false;
    encoder_.set_codec(light_, false);
  }
}

MultifdRebuilder::MultifdRebuilder(CodecSet* codecs, const qemu::StreamFormat& format)
    : format_(format),
      decoder_(
          [codecs](pages::CodecKind k, std::string* why) -> pages::PageCodec* {
            if (!codecs) {
              if (why) *why = "no codecs";
              return nullptr;
            }
            return codecs->get(k, why);
          },
          /*in_place=*/true),
      header_(std::make_unique<uint8_t[]>(format.max_header_size())) {
  parts_.reserve(1 + format.max_pages_per_packet());
}

bool MultifdRebuilder::pump(transport::MessageReceiver& rx, qemu::ChannelRelay& relay, const Gate& gate) {
  if (!relay.attached()) return true;
  auto sink = [&](std::span<const uint8_t> message) {
    if (message.empty() || message[0] != uint8_t(wire::RecordType::multifd_begin)) {
      const uint64_t before = relay.bytes_taken_for_qemu();
      if (!relay.write_records(message)) return false;  // relay.error() says why, or QEMU is slow
      if (relay.bytes_taken_for_qemu() != before) {
        after_bytes_ = true;
        ++bytes_messages_;
      }
      return true;
    }
    if (relay.remote_fin_seen()) {
      error_ = "channel: data after FIN";
      return false;
    }
    wire::Record rec;
    if (wire::RecordReader(message).next(rec) != wire::RecordError::ok) {
      error_ = "channel: page message does not start with a well-formed MULTIFD_BEGIN";
      return false;
    }
    // A pages_alloc no QEMU packet has is refused here: its bound might
    // never fit the buffer, and the message would wait forever.
    const size_t bound = format_.rebuilt_bound(rec.begin.pages_alloc);
    if (bound == 0) {
      error_ = "channel: MULTIFD_BEGIN pages_alloc " + std::to_string(rec.begin.pages_alloc) +
               " that no packet of " + std::string(format_.name()) + " has";
      return false;
    }
    // Decoding changes the dedupe dictionary, so it happens only once QEMU
    // can take whatever the message may turn into.
    if (bound > relay.out_room()) return false;  // QEMU is slow: later
    // A message the source's unchanged filter orders waits until the
    // session has everything of the earlier epochs (Session::same_gate).
    if (gate && !gate(rec.begin.channels, epoch())) return false;
    std::span<const std::span<const uint8_t>> parts;
    const std::string why = rebuild(message, parts);
    if (!why.empty()) {
      error_ = "channel: " + why;
      return false;
    }
    if (!relay.write_packet(parts)) return false;
    if (!parts.empty()) {
      after_bytes_ = false;
      ++packets_;
      written_[1] = written_[0];
      written_[0] = {packet_.packet_num, packet_.flags, uint32_t(packet_.offsets.size()), packet_.pages_alloc};
      qemu::MultifdHeaderFields f;
      f.flags = packet_.flags;
      since_sync_ = format_.is_sync(f) ? 0 : since_sync_ + 1;
    }
    return true;
  };
  if (rx.deliver_to(sink) < 0) {
    error_ = std::string("channel: ") + rx.error();
    return false;
  }
  if (!error_.empty()) return false;
  if (!relay.flush_out()) {
    error_ = relay.error() + describe_written();
    return false;
  }
  return true;
}

std::string MultifdRebuilder::describe_written() const {
  if (packets_ == 0) return " (before any packet)";
  auto one = [](const Written& w) {
    char flags[16];
    std::snprintf(flags, sizeof flags, "0x%x", w.flags);
    return "#" + std::to_string(w.packet_num) + " flags " + flags + " " + std::to_string(w.pages) +
           " pages";
  };
  std::string s = " (after " + std::to_string(packets_) + " packets; last " + one(written_[0]);
  if (packets_ > 1) s += ", before it " + one(written_[1]);
  return s + "; " + std::to_string(since_sync_) + " since the last SYNC)";
}

std::string MultifdRebuilder::rebuild(std::span<const uint8_t> message,
                                      std::span<const std::span<const uint8_t>>& parts) {
  parts = {};
  std::string why = decoder_.decode(message, packet_);
  if (!why.empty()) return why;
  qemu::MultifdHeaderView h;
  h.flags = packet_.flags;
  if (format_.compressed_by_qemu(h)) return "page message for a packet QEMU compressed itself";
  const size_t n = packet_.offsets.size();
  if (n == 0 && !format_.is_sync(h)) {
    // No page and no SYNC: QEMU would do nothing with the packet, so it is
    // not written. Either every page was unchanged, or QEMU sent it empty:
    // QEMU 7.2's sender does so right after a SYNC that took the pages of
    // the job queued before it (QEMU-7.2-STREAM.md, "An empty packet after
    // a SYNC") -- after the last SYNC the destination QEMU may have closed
    // the channel already, and writing it would fail a migration that has
    // completed.
    ++dropped_empty_;
    return {};
  }
  if (packet_.pages_alloc > format_.max_pages_per_packet() || n > packet_.pages_alloc) {
    return "page message for a packet of " + std::to_string(n) + " of " + std::to_string(packet_.pages_alloc) +
           " page slots (" + std::string(format_.name()) + " takes at most " +
           std::to_string(format_.max_pages_per_packet()) + ")";
  }
  h.pages_alloc = packet_.pages_alloc;
  h.normal_pages = uint32_t(n);
  h.next_packet_size = uint32_t(n * pages::kPageSize);
  h.packet_num = packet_.packet_num;
  h.ramblock = packet_.ramblock;
  format_.encode_header(h, packet_.offsets, {header_.get(), h.header_size()});
  parts_.clear();
  parts_.push_back({header_.get(), h.header_size()});
  for (size_t k = 0; k < n; ++k) {
    const uint8_t* p = packet_.page(k);
    std::span<const uint8_t>& back = parts_.back();
    if (k > 0 && back.data() + back.size() == p) {
      back = {back.data(), back.size() + pages::kPageSize};  // adjacent in the same buffer: one part
    } else {
      parts_.push_back({p, pages::kPageSize});
    }
  }
  parts = parts_;
  return {};
}

std::span<const uint8_t> MultifdRebuilder::release_packet(const qemu::ChannelRelay& relay) {
  // Before any packet only the init may have been taken, and all of it.
  const bool at_boundary = packets_ > 0 ? !after_bytes_ : relay.bytes_taken_for_qemu() == format_.init_size();
  if (!at_boundary || relay.remote_fin_seen()) return {};
  qemu::MultifdHeaderView h;
  static_cast<qemu::MultifdHeaderFields&>(h) =
      format_.empty_sync(packets_ > 0 ? written_[0].pages_alloc : format_.typical_pages_per_packet(),
                         written_[0].packet_num + 1);
  const size_t n = h.header_size();
  format_.encode_header(h, {}, {header_.get(), n});
  return {header_.get(), n};
}

}  // namespace mm::engine
