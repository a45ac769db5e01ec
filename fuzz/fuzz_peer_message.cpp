// Peer-channel messages (control/README.md "Peer channel") as either side
// reads them, without the key: one JSON object per line (JsonLines); a hello's
// capabilities checked as the destination and as the source do
// (check_compatible), a session-offer as the destination parses it, a
// session-accept's fabric address as the source parses it, an error's
// class and text. The handshake's proofs are not fuzzed here (they need the
// key; control/PeerChannel.cpp). Property: every refusal is a PeerError
// (CommandError for the accept) with a class and a message; nothing else
// escapes, nothing crashes.
#include <string>
#include <string_view>

#include "control/ControlRequest.hpp"
#include "control/JsonLines.hpp"
#include "control/PeerChannel.hpp"
#include "fuzz/FuzzCheck.hpp"
#include "fuzz/PeerCapabilities.hpp"

using namespace mm::control;
using nlohmann::json;

namespace {

void one_message(std::string_view line) {
  static const Capabilities caps = mm::fuzz::peer_capabilities(2);
  json m;
  try {
    m = parse_json_line(line);  // what JsonLines::read does with each line
  } catch (const std::runtime_error& e) {
    MM_FUZZ_CHECK(std::string_view(e.what()).starts_with("malformed JSON"));
    return;
  }
  const auto type = m.is_object() ? m.find("type") : m.end();
  const std::string t = type != m.end() && type->is_string() ? type->get<std::string>() : "";
  try {
    if (t == "hello") {
      const json c = m.contains("caps") ? m["caps"] : json::object();
      for (bool source : {false, true}) {
        try {
          check_compatible(caps, c, source);
        } catch (const PeerError& e) {
          MM_FUZZ_CHECK(!e.error_class().empty() && *e.what() != 0);
        }
      }
    } else if (t == "session-offer") {
      const SessionOffer o = parse_session_offer(m, false, 7470);
      MM_FUZZ_CHECK(o.session != 0 && o.peer_udp_port >= 1);
    } else if (t == "session-accept") {
      try {
        parse_session_offer(m, true, 7470);
      } catch (const PeerError&) {
      }
      uint16_t queues = 0;
      const auto a = peer_fabric_from_accept(m, queues);
      MM_FUZZ_CHECK(a.udp_port != 0 && queues >= 1 && a.udp_port + queues - 1 <= 65535);
    } else {
      try {
        parse_session_offer(m, true, 7470);
      } catch (const PeerError&) {
      }
      uint16_t queues = 0;
      peer_fabric_from_accept(m, queues);
    }
  } catch (const PeerError& e) {
    MM_FUZZ_CHECK(!e.error_class().empty() && *e.what() != 0);
  } catch (const CommandError& e) {
    MM_FUZZ_CHECK(!e.error_class().empty() && *e.what() != 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (!in.empty()) {
    const size_t nl = in.find('\n');
    one_message(in.substr(0, nl));
    if (nl == std::string_view::npos) break;
    in.remove_prefix(nl + 1);
  }
  return 0;
}
