// QEMU's main migration channel through the MainChannelObserver
// (dataplane/qemu/MainChannelObserver.hpp). Seeds are real main channels
// captured from QEMU 7.2 (fuzz/README.md). The first input byte seeds the
// chunk sizes of a second feed of the same bytes. Properties: what is
// reported does not depend on how the bytes are split; page offsets are
// page-aligned; it counts every byte it was fed.
#include <string>

#include "dataplane/qemu/MainChannelObserver.hpp"
#include "fuzz/FuzzCheck.hpp"

using mm::qemu::MainChannelObserver;

namespace {

// The events in order, folded into a digest (FNV-1a): comparing two runs
// must cost little next to parsing, or the fuzzer crawls on real channels.
struct Log final : MainChannelObserver::Sink {
  uint64_t digest = 1469598103934665603ull;
  uint64_t events = 0;
  std::string why;
  void mix(const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
      digest = (digest ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  }
  void event(char kind, std::string_view block, uint64_t n) {
    ++events;
    mix(&kind, 1);
    mix(block.data(), block.size());
    mix(&n, sizeof n);
  }
  void on_zero_page(std::string_view b, uint64_t off) override {
    MM_FUZZ_CHECK(off % 4096 == 0);
    event('z', b, off);
  }
  void on_page(std::string_view b, uint64_t off) override {
    MM_FUZZ_CHECK(off % 4096 == 0);
    event('p', b, off);
  }
  void on_eos(uint64_t n) override { event('e', {}, n); }
  void on_opaque(std::string_view w) override {
    MM_FUZZ_CHECK(!w.empty() && why.empty());
    why = w;
    event('o', w, 0);
  }
  void on_multifd_flush() override { event('f', {}, 0); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint32_t rng = data[0] * 2654435761u + 1;
  const std::span<const uint8_t> in(data + 1, size - 1);
  Log whole, split;
  MainChannelObserver a(whole), b(split);
  a.feed(in);
  for (size_t pos = 0; pos < in.size();) {
    rng = rng * 1103515245u + 12345u;
    const size_t n = std::min(in.size() - pos, size_t(1 + (rng >> 16) % 97));
    b.feed(in.subspan(pos, n));
    pos += n;
  }
  MM_FUZZ_CHECK(whole.events == split.events && whole.digest == split.digest &&
                whole.why == split.why);
  MM_FUZZ_CHECK(a.opaque() == b.opaque() && a.eos_count() == b.eos_count());
  MM_FUZZ_CHECK(a.zero_records() == b.zero_records() && a.page_records() == b.page_records());
  MM_FUZZ_CHECK(a.machine() == b.machine() && a.sync_before_each_eos() == b.sync_before_each_eos());
  MM_FUZZ_CHECK(a.bytes_seen() == in.size() && b.bytes_seen() == in.size());
  return 0;
}
