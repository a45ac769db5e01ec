// Writes the generated seed corpora (README.md "Seeds") with the project's
// own encoders, so every seed is what a real peer or client sends:
//   fuzz_make_seeds <out-dir> <nic-profiles dir>
// The QEMU captures (multifd and main channel) come from capture_qemu.py.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "control/PeerChannel.hpp"
#include "control/SessionJson.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/pages/UnchangedFilter.hpp"
#include "dataplane/qemu/MultifdPacket.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"
#include "dataplane/store/PageTable.hpp"
#include "dataplane/wire/Records.hpp"
#include "fuzz/PeerCapabilities.hpp"

using namespace mm;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

fs::path g_out;

void write(const std::string& target, const std::string& name, const Bytes& b) {
  fs::create_directories(g_out / target);
  std::ofstream(g_out / target / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void write(const std::string& target, const std::string& name, const std::string& s) {
  write(target, name, Bytes(s.begin(), s.end()));
}

// A piece of FuzzCheck.hpp's Pieces: 16-bit length, then the bytes.
void piece(Bytes& out, const Bytes& b) {
  out.push_back(uint8_t(b.size() >> 8));
  out.push_back(uint8_t(b.size()));
  out.insert(out.end(), b.begin(), b.end());
}

Bytes datagram(wire::PacketType t, uint32_t session, uint16_t stream, uint16_t flags, uint32_t seq,
               const Bytes& payload) {
  Bytes d(wire::kHeaderSize + payload.size());
  wire::Header h;
  h.type = t;
  h.session = session;
  h.stream = stream;
  h.flags = flags;
  h.seq = seq;
  h.msg = seq;
  std::copy(payload.begin(), payload.end(), d.begin() + wire::kHeaderSize);
  wire::seal_header(h, payload, std::span<uint8_t, wire::kHeaderSize>(d.data(), wire::kHeaderSize));
  return d;
}

void mmp_seeds() {
  // mode byte 0: the datagram as sealed (fuzz_mmp_packet.cpp).
  auto with_mode = [](uint8_t mode, Bytes d) {
    d.insert(d.begin(), mode);
    return d;
  };
  Bytes data(1200, 0x41);
  wire::AckPayload a;
  a.cum_seq = 3;
  a.sack = 0b1011;
  a.credits = 60;
  a.echo_ts = 12345;
  Bytes ack(wire::kAckMaxSize);
  ack.resize(wire::encode_ack(a, ack));
  a.more_words = 3;
  a.more[0] = ~0ull;
  a.more[2] = 0x8000000000000001ull;
  Bytes ack_long(wire::kAckMaxSize);
  ack_long.resize(wire::encode_ack(a, ack_long));
  Bytes probe(8, 0);
  wire::put_be64(probe.data(), 999);
  Bytes close = {0, uint8_t(wire::CloseReason::cancelled)};
  const std::string why = "cancelled by the operator";
  close.insert(close.end(), why.begin(), why.end());

  Bytes s;
  piece(s, with_mode(0, datagram(wire::PacketType::data, 7, 0, wire::flag::first | wire::flag::last,
                                 0, data)));
  piece(s, with_mode(0, datagram(wire::PacketType::ack, 7, 0, 0, 0, ack)));
  piece(s, with_mode(0, datagram(wire::PacketType::ack, 7, 1, wire::flag::duplicate, 0, ack_long)));
  piece(s,
        with_mode(0, datagram(wire::PacketType::probe, 7, 0, wire::flag::ack_requested, 0, probe)));
  write("fuzz_mmp_packet", "session", s);
  Bytes c;
  piece(c, with_mode(0, datagram(wire::PacketType::close, 7, 0, 0, 0, close)));
  write("fuzz_mmp_packet", "close", c);
  Bytes other;
  piece(other,
        with_mode(0, datagram(wire::PacketType::data, 99, 3, wire::flag::retransmit, 17, data)));
  write("fuzz_mmp_packet", "foreign-session", other);
  // A sealed datagram as an encrypted session sends it (MMP.md
  // "Encryption"): SEALED, crc 0, ciphertext and tag (here of a key the
  // fuzzed connection does not have).
  Bytes sealed;
  {
    wire::CipherKey k{};
    const wire::PacketCipher tx(k, wire::Direction::source_to_destination, true);
    wire::Header h;
    h.type = wire::PacketType::data;
    h.session = 7;
    h.flags = wire::flag::first | wire::flag::last;
    Bytes d(wire::kHeaderSize + data.size() + wire::kTagSize);
    tx.seal(h, data, d.data() + wire::kHeaderSize, std::span<uint8_t, wire::kHeaderSize>(d.data(), wire::kHeaderSize));
    piece(sealed, with_mode(0, d));
  }
  write("fuzz_mmp_packet", "sealed", sealed);
}

// A packet of n pages of mixed kinds: zero, random, repeated, text-like.
struct Packet {
  std::vector<uint64_t> offsets;
  Bytes pages;
};
Packet make_packet(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Packet p;
  p.pages.assign(n * pages::kPageSize, 0);
  for (size_t i = 0; i < n; ++i) {
    p.offsets.push_back((seed * 64 + i * 3) * pages::kPageSize);
    uint8_t* page = p.pages.data() + i * pages::kPageSize;
    switch (i % 4) {
      case 0:
        break;  // zero
      case 1:
        for (size_t k = 0; k < pages::kPageSize; ++k) page[k] = uint8_t(rng());
        break;
      case 2:
        std::fill(page, page + pages::kPageSize, uint8_t(0x11));
        break;  // repeats
      case 3:
        for (size_t k = 0; k < pages::kPageSize; ++k) page[k] = uint8_t("memory motion "[k % 14]);
        break;
    }
  }
  return p;
}

// Packet `num` of epoch `epoch` with QEMU's `flags`; may_skip and channels
// as the session's filter gate gives them (PageEncoder::encode).
Bytes encode_at(pages::PageEncoder& enc, const Packet& p, uint64_t num, uint32_t flags, uint32_t epoch,
                bool may_skip, uint8_t channels) {
  pages::PacketView v;
  v.flags = flags;
  v.pages_alloc = 128;
  v.packet_num = num;
  v.ramblock = "pc.ram";
  v.offsets = p.offsets;
  v.pages = p.pages.data();
  Bytes m(pages::PageEncoder::max_message(p.offsets.size()));
  wire::RecordWriter w(m);
  enc.encode(v, epoch, may_skip, w, channels);
  m.resize(w.size());
  return m;
}

// Every third packet has QEMU's SYNC flag; no filter.
Bytes encode(pages::PageEncoder& enc, const Packet& p, uint64_t num) {
  return encode_at(enc, p, num, num % 3 == 0 ? 1 : 0, 0, false, 0);
}

void page_seeds() {
  pages::Lz4Codec lz4;
  pages::ZstdCodec zstd;
  struct Case {
    const char* name;
    pages::PageCodec* codec;
    bool dedupe;
  } cases[] = {{"lz4-dedupe", &lz4, true}, {"zstd", &zstd, false}, {"raw-dedupe", nullptr, true}};
  for (const Case& c : cases) {
    pages::PagePolicy pol;
    pol.auto_codec = false;
    pol.codec = c.codec ? c.codec->kind() : pages::CodecKind::raw;
    pol.dedupe = c.dedupe;
    pol.dedupe_slots = 64;
    pages::PageEncoder enc(pol, c.codec, nullptr);
    Bytes stream = {1};  // mode: honest (fuzz_page_decoder.cpp)
    for (uint32_t k = 0; k < 3; ++k) piece(stream, encode(enc, make_packet(8, k), k));
    write("fuzz_page_decoder", c.name, stream);
    Bytes one = {0x37};  // segment sizes (fuzz_records.cpp)
    const Bytes m = encode(enc, make_packet(6, 9), 9);
    one.insert(one.end(), m.begin(), m.end());
    write("fuzz_records", c.name, one);
  }
  // Pages sent again with a few words changed: PAGE_DELTA records.
  {
    pages::PagePolicy pol;
    pol.auto_codec = false;
    pol.codec = pages::CodecKind::lz4;
    pol.dedupe_slots = 64;
    pages::PageEncoder enc(pol, &lz4, nullptr);
    Packet p = make_packet(8, 2);
    Bytes stream = {1};
    piece(stream, encode(enc, p, 1));
    for (size_t i = 0; i < 8; ++i) p.pages[i * pages::kPageSize + 8 * (i + 1)] ^= 0x5a;
    const Bytes again = encode(enc, p, 2);
    piece(stream, again);
    write("fuzz_page_decoder", "delta", stream);
    Bytes one = {0x37};
    one.insert(one.end(), again.begin(), again.end());
    write("fuzz_records", "delta", one);
  }
  // Pages sent again unchanged: PAGE_SAME records with their hashes, which
  // a destination told of the filter checks (mode 3: honest, checked).
  {
    pages::PagePolicy pol;
    pol.auto_codec = false;
    pol.codec = pages::CodecKind::raw;
    pol.unchanged = true;
    pol.dedupe = false;
    pages::UnchangedFilter filter;
    pages::PageEncoder enc(pol, nullptr, &filter);
    const Packet p = make_packet(8, 4);
    Bytes stream = {3};
    piece(stream, encode_at(enc, p, 1, 0, 0, true, 1));
    piece(stream, encode_at(enc, Packet{}, 2, 1, 0, true, 1));  // QEMU's SYNC: epoch 1 from here
    const Bytes same = encode_at(enc, p, 3, 0, 1, true, 1);
    piece(stream, same);
    write("fuzz_page_decoder", "same-checked", stream);
    Bytes one = {0x37};
    one.insert(one.end(), same.begin(), same.end());
    write("fuzz_records", "same", one);
  }
  Bytes m(256);
  wire::RecordWriter w(m);
  const Bytes qevm = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  w.put_bytes(qevm);
  w.put_sync();
  w.put_bytes(Bytes(40, 7));
  w.put_fin();
  m.resize(w.size());
  m.insert(m.begin(), 0x21);
  write("fuzz_records", "bytes-sync-fin", m);
  // Warm re-migration: a page table in two chunks, then stored pages.
  {
    store::PageTable t;
    std::vector<std::vector<uint8_t>> chunks;
    store::Budget budget(64 << 20);
    auto cap = std::make_unique<store::Capture>(budget, store::Backing::memory, "");
    const uint16_t blk = cap->block("pc.ram");
    Bytes page(4096, 3);
    for (uint64_t i = 0; i < 70000; i += 997) cap->page(blk, i, 1, pages::page_hash(page.data()), store::Content::raw, page);
    std::vector<std::unique_ptr<store::Capture>> caps;
    caps.push_back(std::move(cap));
    std::string why;
    auto img = store::Image::merge("vm", std::move(caps), budget, why);
    Bytes s = {0x37};
    Bytes rec(1 << 20);
    wire::RecordWriter tw(rec);
    for (const auto& c : store::PageTable::of(*img).encode()) tw.put_store_table(c);
    tw.put_page_stored(997 * 4096, 1, 2);
    s.insert(s.end(), rec.begin(), rec.begin() + long(tw.size()));
    write("fuzz_records", "store-table", s);
  }
}

void multifd_seeds() {
  qemu::MultifdInit init;
  init.id = 1;
  for (size_t i = 0; i < init.uuid.size(); ++i) init.uuid[i] = uint8_t(i * 17);
  Bytes ch(qemu::kMultifdInitSize);
  qemu::encode_multifd_init(
      init, std::span<uint8_t, qemu::kMultifdInitSize>(ch.data(), qemu::kMultifdInitSize));
  for (uint32_t k = 0; k < 3; ++k) {
    qemu::MultifdPacketHeader h;
    h.flags = k == 2 ? qemu::multifd_flag::sync : 0;
    h.pages_alloc = 128;
    h.normal_pages = k == 2 ? 0 : 4;
    h.next_packet_size = 4 * qemu::kTargetPageSize;
    h.packet_num = k;
    h.ramblock = "pc.ram";
    for (uint32_t i = 0; i < h.normal_pages; ++i)
      h.offsets.push_back((k * 8 + i) * qemu::kTargetPageSize);
    const Bytes hdr = qemu::encode_multifd_header(h);
    ch.insert(ch.end(), hdr.begin(), hdr.end());
    ch.insert(ch.end(), h.payload_size(), uint8_t(k));
  }
  write("fuzz_multifd", "generated-channel", ch);
}

void control_seeds() {
  const std::vector<std::string> reqs = {
      R"({"execute": "qmp_capabilities"})",
      R"({"execute": "query-version", "id": "abc"})",
      R"({"execute": "query-session", "arguments": {"session": 7}})",
      R"({"execute": "session-prepare", "arguments": {"session": 4, "qemu-uri": "unix:/run/q.sock", "peer-udp-port": 7470, "peer-queues": 2, "max-bandwidth": 1250000000}})",
      R"({"execute": "session-start", "arguments": {"session": 3, "listen": "unix:/tmp/x.sock", "peer-ip": "10.77.1.2", "peer-mac": "02:00:00:00:00:02", "pages": {"codec": "zstd", "zero": true, "unchanged": false, "dedupe": true, "dedupe-slots": 1024}}})",
      R"({"execute": "migrate", "arguments": {"session": 7, "peer": "10.0.0.2:7471", "src-qmp": "/run/qemu/vm7.qmp", "dst-qmp": "/run/qemu/vm7-incoming.qmp", "max-bandwidth": 1250000000, "postcopy-after": 30, "pages": {"codec": "auto"}}})",
      R"({"execute": "session-cancel", "arguments": {"session": 7}})",
      R"({"execute": "query-stats"})",
  };
  std::string all;
  for (size_t i = 0; i < reqs.size(); ++i) {
    write("fuzz_control_request", "request-" + std::to_string(i), reqs[i] + "\n");
    all += reqs[i] + "\n";
  }
  write("fuzz_control_request", "session", all);
}

void peer_seeds() {
  const control::Capabilities c = fuzz::peer_capabilities(1);
  using nlohmann::json;
  const json hello = {{"type", "hello"}, {"nonce", std::string(32, 'a')}, {"caps", c.to_json()}};
  pages::PagePolicy pol;
  const json offer = {{"type", "session-offer"},
                      {"session", 7},
                      {"postcopy", false},
                      {"multifd-channels", 2},
                      {"pages", control::to_json(pol)},
                      {"fabric", {{"ip", c.ip}, {"mac", c.mac}, {"udp_port", 7470}, {"queues", 2}}},
                      {"dst-qmp", "/run/qemu/vm7-incoming.qmp"}};
  const json accept = {
      {"type", "session-accept"},
      {"session", 7},
      {"incoming-uri", "unix:/run/mm/d-7-in.sock"},
      {"fabric",
       {{"ip", "10.77.1.2"}, {"mac", "02:00:00:00:00:02"}, {"udp_port", 7470}, {"queues", 1}}}};
  const json error = {
      {"type", "error"}, {"class", "AuthError"}, {"error", "peer authentication failed"}};
  write("fuzz_peer_message", "source-side",
        hello.dump() + "\n" + json({{"type", "auth"}, {"proof", std::string(64, 'b')}}).dump() +
            "\n" + offer.dump() + "\n");
  write("fuzz_peer_message", "destination-side",
        hello.dump() + "\n" + json({{"type", "welcome"}}).dump() + "\n" + accept.dump() + "\n");
  write("fuzz_peer_message", "error", error.dump() + "\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_make_seeds <out-dir> <nic-profiles dir>\n";
    return 2;
  }
  g_out = argv[1];
  mmp_seeds();
  page_seeds();
  multifd_seeds();
  control_seeds();
  peer_seeds();
  for (const auto& f : fs::directory_iterator(argv[2])) {
    if (f.path().extension() != ".toml") continue;
    fs::create_directories(g_out / "fuzz_nic_profile");
    fs::copy_file(f.path(), g_out / "fuzz_nic_profile" / f.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  std::cout << "seeds written to " << g_out << "\n";
  return 0;
}
