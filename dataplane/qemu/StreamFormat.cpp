#include "dataplane/qemu/StreamFormat.hpp"

namespace mm::qemu {

namespace {

// QEMU 7.2's format: the layouts live in MultifdPacket, ChannelClassifier
// and MainChannelObserver (this folder); this class is the one door to them.
class Qemu72Format final : public StreamFormat {
 public:
  std::string_view name() const override { return "QEMU 7.2"; }
  size_t classify_size() const override { return kMultifdIdOffset + 1; }
  ChannelKind classify(std::span<const uint8_t> first_bytes) const override {
    return classify_channel(first_bytes);
  }
  bool main_channel_first() const override { return true; }
  size_t init_size() const override { return kMultifdInitSize; }
  MultifdError parse_init(std::span<const uint8_t> in, MultifdInit& out) const override {
    return parse_multifd_init(in, out);
  }
  MultifdError header_size(std::span<const uint8_t> in, size_t& size) const override {
    return multifd_header_size(in, size);
  }
  MultifdError parse_header(std::span<const uint8_t> in, MultifdHeaderView& out) const override {
    return parse_multifd_header(in, out);
  }
  void encode_header(const MultifdHeaderView& h, std::span<const uint64_t> offsets,
                     std::span<uint8_t> out) const override {
    encode_multifd_header(h, offsets, out);
  }
  size_t max_header_size() const override { return kMultifdHeaderFixed + 8 * size_t(kMultifdMaxPagesAlloc); }
  size_t rebuilt_bound(uint32_t pages_alloc) const override {
    return pages_alloc == 0 || pages_alloc > kMultifdMaxPagesAlloc ? 0 : qemu::rebuilt_bound(pages_alloc);
  }
  uint32_t max_pages_per_packet() const override { return kMultifdMaxPagesAlloc; }
  uint32_t typical_pages_per_packet() const override { return 128; }  // 512 KiB of 4 KiB pages
  size_t page_size() const override { return kTargetPageSize; }
  bool is_sync(const MultifdHeaderFields& h) const override { return h.flags & multifd_flag::sync; }
  bool compressed_by_qemu(const MultifdHeaderFields& h) const override { return h.compressed(); }
  MultifdHeaderFields empty_sync(uint32_t pages_alloc, uint64_t packet_num) const override {
    MultifdHeaderFields h;
    h.flags = multifd_flag::sync;
    h.pages_alloc = pages_alloc;
    h.packet_num = packet_num;
    return h;  // no pages, so no payload and no ramblock QEMU looks up
  }
  std::unique_ptr<MainChannelObserver> observe_main(MainChannelObserver::Sink& sink) const override {
    return std::make_unique<MainChannelObserver>(sink);
  }
};

}  // namespace

const StreamFormat& qemu_7_2() {
  static const Qemu72Format f;
  return f;
}

}  // namespace mm::qemu
