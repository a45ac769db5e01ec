// Proves what the control socket and the peer channel refuse before any
// engine is asked (control/ControlRequest.hpp): request shapes, session
// arguments, a peer's offer and accept, and a peer's capabilities
// (check_compatible) -- each refusal a typed error naming what is wrong.
// Inputs that crashed or misbehaved under the fuzzers (fuzz/README.md) are
// kept here.
#include <gtest/gtest.h>

#include <string>

#include "control/ControlRequest.hpp"
#include "control/JsonLines.hpp"
#include "control/PeerChannel.hpp"

using namespace mm::control;
using nlohmann::json;

namespace {

template <class E, class F>
std::string refusal(F&& f, std::string* cls = nullptr) {
  try {
    f();
  } catch (const E& e) {
    if (cls) *cls = e.error_class();
    return e.what();
  }
  return "(accepted)";
}

Capabilities caps() {
  Capabilities c;
  c.version = "0.1.0";
  c.mmp = 2;
  c.mtu = 9000;
  c.codecs = {"none", "lz4"};
  return c;
}

}  // namespace

TEST(ControlRequest, ShapesAreCheckedWithClearErrors) {
  std::string cls;
  EXPECT_NE(refusal<CommandError>([] { parse_request_line("{\"execute\": "); }, &cls)
                .find("malformed JSON"),
            std::string::npos);
  EXPECT_EQ(cls, "GenericError");
  EXPECT_NE(refusal<CommandError>([] { parse_request_line("[1]"); }).find("must be a JSON object"),
            std::string::npos);
  EXPECT_NE(
      refusal<CommandError>([] { parse_request_line("{\"execute\": 5}"); }).find("needs 'execute'"),
      std::string::npos);
  EXPECT_NE(refusal<CommandError>([] {
              parse_request_line(R"({"execute": "x", "extra": 1})");
            }).find("'extra'"),
            std::string::npos);
  EXPECT_NE(refusal<CommandError>([] {
              parse_request_line(R"({"execute": "x", "arguments": []})");
            }).find("'arguments' must be an object"),
            std::string::npos);
  const Request r =
      parse_request_line(R"({"execute": "query-session", "arguments": {"session": 3}, "id": 1})");
  EXPECT_EQ(r.command, "query-session");
  EXPECT_EQ(session_arg(r.args), 3u);
}

TEST(ControlRequest, SessionArgumentsBecomeSessionParams) {
  const json start = {{"session", 5u},         {"listen", "unix:/tmp/s.sock"},
                      {"peer-ip", "10.0.0.2"}, {"peer-mac", "02:00:00:00:00:02"},
                      {"peer-queues", 2u},     {"pages", {{"codec", "zstd"}, {"delta", false}}}};
  const auto p = session_params_from_args(true, start, 7470, 4);
  EXPECT_FALSE(p.pages.delta);
  EXPECT_TRUE(session_params_from_args(true, {{"session", 5u}, {"listen", "unix:/tmp/s.sock"}, {"peer-ip", "10.0.0.2"},
                                             {"peer-mac", "02:00:00:00:00:02"}}, 7470, 4).pages.delta);
  EXPECT_EQ(p.id, 5u);
  EXPECT_EQ(p.peer.ip, 0x0a000002u);
  EXPECT_EQ(p.peer.udp_port, 7470);  // the base: stream s goes to 7470 + (5 + s) % 2
  EXPECT_EQ(p.peer_queues, 2);
  EXPECT_EQ(p.pages.codec, mm::pages::CodecKind::zstd);
  std::string cls;
  EXPECT_NE(refusal<CommandError>(
                [] {
                  session_params_from_args(false, {{"session", 1u}}, 7470, 1);
                },
                &cls)
                .find("missing argument 'qemu-uri'"),
            std::string::npos);
  EXPECT_EQ(cls, "InvalidParameter");
  EXPECT_NE(refusal<CommandError>([] {
              session_params_from_args(false,
                                       {{"session", 3u},
                                        {"qemu-uri", "unix:/q"},
                                        {"peer-udp-port", 65535u},
                                        {"peer-queues", 4u}},
                                       7470, 1);
            }).find("exceed 65535"),
            std::string::npos);
  EXPECT_NE(refusal<CommandError>([] {
              session_params_from_args(false, {{"session", 1.5}, {"qemu-uri", "unix:/q"}}, 7470, 1);
            }).find("must be an integer"),
            std::string::npos);
  // A destination is told the source's page policy (its unchanged filter):
  // on by default, so a session prepared without it checks PAGE_SAME and
  // is not spread; told the filter is off, it may spread.
  const auto d = session_params_from_args(
      false, {{"session", 4u}, {"qemu-uri", "unix:/q"}, {"pages", {{"unchanged", true}}}}, 7470, 1);
  EXPECT_TRUE(d.pages.unchanged);
  EXPECT_FALSE(mm::engine::spreads(d));
  const auto dflt = session_params_from_args(false, {{"session", 5u}, {"qemu-uri", "unix:/q"}}, 7470, 1);
  EXPECT_TRUE(dflt.pages.unchanged);
  EXPECT_FALSE(mm::engine::spreads(dflt));
  const auto off = session_params_from_args(
      false, {{"session", 6u}, {"qemu-uri", "unix:/q"}, {"pages", {{"unchanged", false}}}}, 7470, 1);
  EXPECT_FALSE(off.pages.unchanged);
  EXPECT_TRUE(mm::engine::spreads(off));
}

TEST(ControlRequest, PeerOfferIsCheckedMemberByMember) {
  const json good = {{"type", "session-offer"},
                     {"session", 9u},
                     {"multifd-channels", 4u},
                     {"postcopy", false},
                     {"dst-incoming", "unix:/tmp/in.sock"},
                     {"fabric", {{"udp_port", 7480u}, {"queues", 2u}}}};
  const SessionOffer o = parse_session_offer(good, false, 7470);
  EXPECT_EQ(o.session, 9u);
  EXPECT_EQ(o.peer_udp_port, 7480);
  EXPECT_EQ(o.peer_queues, 2);
  EXPECT_EQ(o.multifd_channels, 4u);
  EXPECT_FALSE(o.has_dst_qmp);
  EXPECT_EQ(o.dst_incoming, "unix:/tmp/in.sock");
  auto with = [&](const char* k, json v) {
    json j = good;
    j[k] = std::move(v);
    return refusal<PeerError>([&] { parse_session_offer(j, false, 7470); });
  };
  EXPECT_NE(with("session", 0u).find("valid session id"), std::string::npos);
  EXPECT_NE(with("session", 1e30).find("'session'"),
            std::string::npos);  // no float-to-int overflow
  EXPECT_NE(with("session", "7").find("'session'"), std::string::npos);
  EXPECT_NE(with("multifd-channels", 17u).find("'multifd-channels'"), std::string::npos);
  EXPECT_NE(with("dst-qmp", 5).find("non-string 'dst-qmp'"), std::string::npos);
  EXPECT_NE(with("postcopy", "yes").find("'postcopy'"), std::string::npos);
  EXPECT_NE(with("fabric", 5).find("not an object"), std::string::npos);
  EXPECT_NE(with("fabric", {{"udp_port", 65535u}, {"queues", 4u}}).find("exceed 65535"),
            std::string::npos);
  EXPECT_NE(with("pages", {{"codec", "deflate"}}).find("no compressdev"), std::string::npos);
  EXPECT_NE(refusal<PeerError>([] {
              parse_session_offer(json::array(), false, 7470);
            }).find("JSON object"),
            std::string::npos);
}

TEST(ControlRequest, PeerAcceptFabricIsChecked) {
  const json good = {
      {"fabric",
       {{"ip", "10.77.1.2"}, {"mac", "02:00:00:00:00:02"}, {"udp_port", 7470u}, {"queues", 2u}}}};
  uint16_t queues = 0;
  const auto a = peer_fabric_from_accept(good, queues);
  EXPECT_EQ(a.udp_port, 7470);
  EXPECT_EQ(queues, 2);
  EXPECT_EQ(a.ip, 0x0a4d0102u);
  std::string cls;
  json bad = good;
  bad["fabric"]["mac"] = 7;
  EXPECT_NE(refusal<CommandError>([&] { peer_fabric_from_accept(bad, queues); }, &cls)
                .find("non-string 'mac'"),
            std::string::npos);
  EXPECT_EQ(cls, "PeerError");
  bad = good;
  bad["fabric"].erase("udp_port");
  EXPECT_NE(refusal<CommandError>([&] { peer_fabric_from_accept(bad, queues); }).find("udp_port"),
            std::string::npos);
  EXPECT_NE(
      refusal<CommandError>([&] { peer_fabric_from_accept("x", queues); }).find("not a JSON object"),
      std::string::npos);
}

TEST(ControlRequest, CompatibleCapabilitiesPass) {
  json theirs = caps().to_json();
  EXPECT_NO_THROW(check_compatible(caps(), theirs, true));
  EXPECT_NO_THROW(check_compatible(caps(), theirs, false));
  theirs["mtu"] = 1500;
  std::string cls;
  EXPECT_NE(refusal<PeerError>([&] { check_compatible(caps(), theirs, true); }, &cls)
                .find("fabric MTU mismatch: source 9000, destination 1500"),
            std::string::npos);
  EXPECT_EQ(cls, "CapabilityMismatch");
}

// fuzz_peer_message found it: a hello whose capabilities lack "mtu" (or
// "codecs") made check_compatible read a missing member of a const JSON
// object -- an assertion (undefined behaviour without asserts) in the
// destination daemon, before the peer had proven anything.
TEST(ControlRequest, CapabilitiesWithMissingOrOddMembersAreRefusedNotCrashed) {
  json theirs = caps().to_json();
  theirs.erase("mtu");
  EXPECT_NE(refusal<PeerError>([&] {
              check_compatible(caps(), theirs, false);
            }).find("fabric MTU mismatch: source none, destination 9000"),
            std::string::npos);
  theirs = caps().to_json();
  theirs.erase("codecs");
  EXPECT_NE(
      refusal<PeerError>([&] { check_compatible(caps(), theirs, true); }).find("destination none"),
      std::string::npos);
  for (json odd : {json(1e300), json(-1), json("9000"), json::array()}) {
    theirs = caps().to_json();
    theirs["mtu"] = odd;
    EXPECT_NE(refusal<PeerError>([&] {
                check_compatible(caps(), theirs, true);
              }).find("fabric MTU mismatch"),
              std::string::npos)
        << odd.dump();
  }
  theirs = caps().to_json();
  theirs["codecs"] = "none";
  EXPECT_NE(
      refusal<PeerError>([&] { check_compatible(caps(), theirs, true); }).find("codecs mismatch"),
      std::string::npos);
}

// fuzz_control_request and fuzz_peer_message found it: a number too large
// for a double ("1e400") makes nlohmann::json::parse throw out_of_range, not
// parse_error. The control socket caught only parse_error, so one such
// request line ended memmotiond; the peer channel answered with the
// library's text. Both are refused as malformed JSON now.
TEST(ControlRequest, NumberOverflowIsMalformedJsonNotAnotherException) {
  std::string cls;
  EXPECT_NE(refusal<CommandError>(
                [] { parse_request_line(R"({"execute": "x", "arguments": {"n": 1e400}})"); }, &cls)
                .find("malformed JSON"),
            std::string::npos);
  EXPECT_EQ(cls, "GenericError");
  EXPECT_THROW(parse_request_json("[7e470]"), CommandError);
  try {
    parse_json_line(R"({"type": "hello", "caps": {"udp_port": 7e470}})");
    ADD_FAILURE() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("malformed JSON from the other side"), std::string::npos)
        << e.what();
  }
}
