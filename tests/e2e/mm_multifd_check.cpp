// mm-multifd-check FILE...: parses captured QEMU multifd channel streams
// (MultiFDInit, then header + pages per packet) with the project's parser
// and reports packets, pages and SYNCs; exits 1 on the first parse error.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "dataplane/qemu/MultifdPacket.hpp"

using namespace mm::qemu;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mm-multifd-check FILE...\n");
    return 2;
  }
  for (int f = 1; f < argc; ++f) {
    std::ifstream in(argv[f], std::ios::binary);
    const std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::span<const uint8_t> rest(b);
    MultifdInit init;
    if (const auto e = parse_multifd_init(rest, init); e != MultifdError::ok) {
      std::printf("%s: init: %s\n", argv[f], std::string(to_string(e)).c_str());
      return 1;
    }
    rest = rest.subspan(kMultifdInitSize);
    uint64_t packets = 0, pages = 0, syncs = 0, last_num = 0;
    // Packets with neither pages nor SYNC (QEMU-7.2-STREAM.md, "An empty
    // packet after a SYNC"), and whether the channel ends with one.
    uint64_t empty = 0;
    bool ends_empty = false;
    std::string block;
    while (!rest.empty()) {
      MultifdPacketHeader h;
      const auto e = parse_multifd_header(rest, h);
      if (e != MultifdError::ok) {
        std::printf("%s: packet %llu at byte %zu: %s\n", argv[f], (unsigned long long)packets,
                    b.size() - rest.size(), std::string(to_string(e)).c_str());
        return 1;
      }
      if (rest.size() < h.header_size() + h.payload_size()) {
        std::printf("%s: packet %llu: payload cut short\n", argv[f], (unsigned long long)packets);
        return 1;
      }
      rest = rest.subspan(h.header_size() + h.payload_size());
      ++packets;
      pages += h.normal_pages;
      syncs += (h.flags & multifd_flag::sync) != 0;
      ends_empty = h.normal_pages == 0 && (h.flags & multifd_flag::sync) == 0;
      empty += ends_empty;
      last_num = h.packet_num;
      if (!h.ramblock.empty()) block = h.ramblock;
    }
    std::printf(
        "%s: channel %u: %llu packets, %llu pages, %llu syncs, last packet_num %llu, block %s; "
        "%llu without pages or SYNC%s\n",
        argv[f], init.id, (unsigned long long)packets, (unsigned long long)pages,
        (unsigned long long)syncs, (unsigned long long)last_num, block.c_str(),
        (unsigned long long)empty, ends_empty ? ", the channel ends with one" : "");
  }
  return 0;
}
