// A QEMU 7.2 multifd channel (dataplane/qemu/MultifdPacket.hpp) as the
// source daemon reads it: MultiFDInit, then packet headers each followed by
// its payload, until the bytes end or a header is refused. Seeds are real
// channels captured from QEMU (fuzz/README.md). Properties: the owning and
// the zero-copy parse agree on every header; an accepted header re-encodes
// (both encoders) to bytes that parse to the same fields; an accepted init
// re-encodes to one that parses the same.
#include <cstring>
#include <vector>

#include "dataplane/qemu/MultifdPacket.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm::qemu;

namespace {

bool same_fields(const MultifdHeaderFields& a, const MultifdHeaderFields& b) {
  return a.flags == b.flags && a.pages_alloc == b.pages_alloc && a.normal_pages == b.normal_pages &&
         a.next_packet_size == b.next_packet_size && a.packet_num == b.packet_num;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  MultifdInit init;
  if (parse_multifd_init(in, init) != MultifdError::ok) return 0;
  std::array<uint8_t, kMultifdInitSize> enc;
  encode_multifd_init(init, enc);
  MultifdInit again;
  MM_FUZZ_CHECK(parse_multifd_init(enc, again) == MultifdError::ok);
  MM_FUZZ_CHECK(again.uuid == init.uuid && again.id == init.id);
  in = in.subspan(kMultifdInitSize);
  MultifdPacketHeader owned;
  MultifdHeaderView view;
  std::vector<uint8_t> buf;
  for (;;) {
    size_t hsize = 0;
    const MultifdError se = multifd_header_size(in, hsize);
    if (se != MultifdError::ok) break;
    MM_FUZZ_CHECK(hsize >= kMultifdHeaderFixed);
    if (hsize > in.size()) break;
    const MultifdError e1 = parse_multifd_header(in.first(hsize), owned);
    const MultifdError e2 = parse_multifd_header(in.first(hsize), view);
    MM_FUZZ_CHECK(e1 == e2);
    if (e1 != MultifdError::ok) break;
    MM_FUZZ_CHECK(same_fields(owned, view) && owned.ramblock == view.ramblock);
    MM_FUZZ_CHECK(owned.header_size() == hsize && owned.offsets.size() == owned.normal_pages);
    for (uint32_t k = 0; k < owned.normal_pages; ++k) {
      uint64_t be = 0;
      for (int i = 0; i < 8; ++i) be = (be << 8) | view.offsets_be[8 * k + i];
      MM_FUZZ_CHECK(be == owned.offsets[k] && be % kTargetPageSize == 0);
    }
    const std::vector<uint8_t> e = encode_multifd_header(owned);
    MM_FUZZ_CHECK(e.size() == hsize);
    buf.assign(hsize, 0xee);
    encode_multifd_header(view, owned.offsets, buf);
    MM_FUZZ_CHECK(buf == e);
    MultifdPacketHeader back;
    MM_FUZZ_CHECK(parse_multifd_header(e, back) == MultifdError::ok);
    MM_FUZZ_CHECK(same_fields(back, owned) && back.ramblock == owned.ramblock &&
                  back.offsets == owned.offsets);
    in = in.subspan(hsize);
    if (owned.payload_size() > in.size()) break;
    in = in.subspan(owned.payload_size());
  }
  return 0;
}
