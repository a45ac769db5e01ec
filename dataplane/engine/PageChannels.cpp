#include "dataplane/engine/PageChannels.hpp"

#include <cstring>
#include <stdexcept>

#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
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
            deflate_ = std::make_unique<pages::CompressdevDeflate>(compressdev_);
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
// Input is read in chunks of this much at least (one QEMU 7.2 packet is
// 1344 + 128 x 4096 bytes).
constexpr size_t kReadChunk = 256 << 10;
// Messages one pump() may queue, so that one busy channel cannot starve
// the others of the worker.
constexpr int kMessagesPerPump = 4;
}  // namespace

MultifdSource::MultifdSource(uint16_t channel, const pages::PagePolicy& policy, pages::PageCodec* codec,
                             pages::UnchangedFilter* filter, size_t max_message)
    : channel_(channel), max_message_(max_message), encoder_(policy, codec, filter) {}

void MultifdSource::reserve_input(size_t n) {
  if (in_.size() < n) in_.resize(std::max(n, in_.size() * 2));
}

void MultifdSource::consume(size_t n) {
  std::memmove(in_.data(), in_.data() + n, in_len_ - n);
  in_len_ -= n;
}

void MultifdSource::make_bytes_message(size_t n) {
  if (msg_.size() < n + wire::kBytesRecordOverhead) msg_.resize(n + wire::kBytesRecordOverhead);
  wire::RecordWriter w(msg_);
  w.put_bytes({in_.data(), n});
  msg_len_ = w.size();
  consume(n);
}

bool MultifdSource::parse(const Gate& gate) {
  if (step_ == Step::init) {
    if (in_len_ < qemu::kMultifdInitSize) return true;
    qemu::MultifdInit init;
    const auto e = qemu::parse_multifd_init({in_.data(), qemu::kMultifdInitSize}, init);
    if (e != qemu::MultifdError::ok) return fail("MultiFDInit: " + std::string(qemu::to_string(e)));
    make_bytes_message(qemu::kMultifdInitSize);  // the destination QEMU checks it as is
    step_ = Step::packets;
    return true;
  }
  if (step_ == Step::passthrough) {
    if (in_len_ > 0) make_bytes_message(std::min(in_len_, max_message_ - wire::kBytesRecordOverhead));
    return true;
  }
  size_t hsize = 0;
  auto e = qemu::multifd_header_size({in_.data(), in_len_}, hsize);
  if (e == qemu::MultifdError::need_more) return true;
  if (e != qemu::MultifdError::ok) return fail("packet header: " + std::string(qemu::to_string(e)));
  reserve_input(hsize);
  if (in_len_ < hsize) return true;
  qemu::MultifdPacketHeader h;
  e = qemu::parse_multifd_header({in_.data(), hsize}, h);
  if (e != qemu::MultifdError::ok) return fail("packet header: " + std::string(qemu::to_string(e)));
  if (h.compressed()) {
    // QEMU compresses each channel as one stream across packets: its
    // pages cannot be taken apart, so the channel is relayed as bytes.
    step_ = Step::passthrough;
    return parse(gate);
  }
  const size_t total = hsize + h.payload_size();
  reserve_input(total);
  if (in_len_ < total) return true;
  const size_t need = pages::PageEncoder::max_message(h.normal_pages);
  if (need > max_message_) {
    return fail("packet of " + std::to_string(h.normal_pages) + " pages exceeds the largest message (" +
                std::to_string(max_message_) + " bytes)");
  }
  if (msg_.size() < need) msg_.resize(need);
  pages::PacketView v;
  v.flags = h.flags;
  v.pages_alloc = h.pages_alloc;
  v.packet_num = h.packet_num;
  v.ramblock = h.ramblock;
  v.offsets = h.offsets;
  v.pages = in_.data() + hsize;
  const uint32_t epoch = syncs_;
  wire::RecordWriter w(msg_);
  encoder_.encode(v, epoch, gate && gate(epoch), w);
  msg_len_ = w.size();
  if (h.flags & qemu::multifd_flag::sync) ++syncs_;
  consume(total);
  return true;
}

bool MultifdSource::pump(qemu::ChannelRelay& relay, transport::StreamSender& tx, const Gate& gate, bool& work,
                         uint32_t ahead) {
  qemu::ByteChannel* ch = relay.channel();
  if (!ch || relay.local_fin_queued()) return true;
  for (int sent = 0; sent < kMessagesPerPump;) {
    if (msg_len_ > 0) {
      if (!tx.submit_message({msg_.data(), msg_len_})) return true;  // window full: later
      msg_len_ = 0;
      ++sent;
      work = true;
      continue;
    }
    // Over the read-ahead budget: QEMU's next packet waits in its socket
    // (what QEMU can push is what the fabric drains).
    if (tx.unacked() >= ahead && !eof_) return true;
    if (!parse(gate)) return false;
    if (msg_len_ > 0) continue;
    if (eof_) {
      if (in_len_ > 0) return fail("QEMU closed the channel inside a packet (" + std::to_string(in_len_) + " bytes left)");
      if (relay.send_fin(tx)) work = true;
      return true;
    }
    if (!ch->is_open()) return true;
    reserve_input(in_len_ + kReadChunk);
    std::span<uint8_t> room(in_.data() + in_len_, in_.size() - in_len_);
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

MultifdRebuilder::MultifdRebuilder(CodecSet* codecs)
    : decoder_([codecs](pages::CodecKind k, std::string* why) -> pages::PageCodec* {
        if (!codecs) {
          if (why) *why = "no codecs";
          return nullptr;
        }
        return codecs->get(k, why);
      }) {}

std::string MultifdRebuilder::rebuild(std::span<const uint8_t> message, std::vector<uint8_t>& out) {
  out.clear();
  std::string why = decoder_.decode(message, packet_);
  if (!why.empty()) return why;
  if (packet_.flags & (qemu::multifd_flag::zlib | qemu::multifd_flag::zstd)) {
    return "page message for a packet QEMU compressed itself";
  }
  const size_t n = packet_.offsets.size();
  if (n == 0 && packet_.omitted > 0 && !(packet_.flags & qemu::multifd_flag::sync)) {
    // Every page was unchanged: QEMU would do nothing with the packet.
    // (A packet QEMU sent empty itself is rebuilt as it was.)
    ++dropped_empty_;
    return {};
  }
  qemu::MultifdPacketHeader h;
  h.flags = packet_.flags;
  h.pages_alloc = packet_.pages_alloc;
  h.normal_pages = uint32_t(n);
  h.next_packet_size = uint32_t(n * pages::kPageSize);
  h.packet_num = packet_.packet_num;
  h.ramblock = packet_.ramblock;
  h.offsets = packet_.offsets;
  out = qemu::encode_multifd_header(h);
  out.insert(out.end(), packet_.pages.begin(), packet_.pages.begin() + long(n * pages::kPageSize));
  return {};
}

}  // namespace mm::engine
