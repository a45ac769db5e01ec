// What the control socket and the peer channel read from the other side,
// checked without touching the dataplane: a request line's shape, the
// arguments of the session commands, a peer's session offer and the
// destination's fabric address in its accept. Pure code (no sockets, no
// engine), so it is unit-tested and fuzzed (fuzz/README.md) on its own.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "dataplane/engine/Session.hpp"

namespace mm::control {

// An error reply: QMP's {"error": {"class": ..., "desc": ...}}.
class CommandError : public std::runtime_error {
 public:
  CommandError(std::string cls, const std::string& desc)
      : std::runtime_error(desc), cls_(std::move(cls)) {}
  const std::string& error_class() const { return cls_; }

 private:
  std::string cls_;
};

// One control request: {"execute": name, "arguments"?: {...}, "id"?: any}.
struct Request {
  std::string command;
  nlohmann::json args = nlohmann::json::object();
};
// Throws CommandError("GenericError") naming what is wrong with the shape.
Request parse_request(const nlohmann::json& request);
// One request line as JSON: anything nlohmann refuses -- a syntax error, or
// a number too large for a double ("1e400") -- is a GenericError
// ("malformed JSON: ..."), never another exception.
nlohmann::json parse_request_json(std::string_view line);
// Both: the line's JSON, then its shape.
Request parse_request_line(std::string_view line);

// Argument accessors: a wrong or missing argument is a CommandError
// ("InvalidParameter") naming it.
const nlohmann::json& arg(const nlohmann::json& args, const char* name);
uint64_t uint_arg(const nlohmann::json& args, const char* name, uint64_t max, uint64_t min = 0);
uint64_t uint_arg_or(const nlohmann::json& args, const char* name, uint64_t max, uint64_t dflt);
double double_arg_or(const nlohmann::json& args, const char* name, double max, double dflt);
bool bool_arg_or(const nlohmann::json& args, const char* name, bool dflt);
std::string string_arg(const nlohmann::json& args, const char* name);
void no_other_args(const nlohmann::json& args, std::initializer_list<const char*> known);
uint32_t session_arg(const nlohmann::json& args);

// session-prepare (source false) / session-start (source true) arguments as
// the session to add. udp_base_port / queues: ours, the defaults for the
// peer's. Throws CommandError("InvalidParameter").
// The VM's identity for the page store (`vm`): 1..128 printable ASCII
// characters without spaces, e.g. a libvirt domain UUID.
std::string vm_arg(const nlohmann::json& args);
engine::SessionParams session_params_from_args(bool source, const nlohmann::json& args,
                                               uint16_t udp_base_port, uint16_t queues);

// A source's session-offer as the destination reads it.
struct SessionOffer {
  uint32_t session = 0;
  pages::PagePolicy pages;
  bool has_dst_qmp = false;
  std::string dst_qmp;       // the destination QEMU's QMP socket, when the daemons drive it
  std::string dst_incoming;  // else: the URI the manager gave it with -incoming
  uint64_t multifd_channels = 0;
  bool postcopy = false;
  bool postcopy_preempt = false;  // QEMU's postcopy-preempt channel on stream 17
  uint16_t peer_udp_port = 0;  // the source's base UDP port for this session's answers
  uint16_t peer_queues = 1;    // ... and its queues (stream s: base + wire::stream_queue)
  std::string vm;              // the VM's identity, for this host's page store ("": none)
};
// Throws PeerError("PeerError") naming the bad member; deflate pages
// without a compressdev here are refused.
SessionOffer parse_session_offer(const nlohmann::json& offer, bool have_compressdev,
                                 uint16_t udp_base_port);

// The destination's fabric address from its session-accept, for session id.
// Throws CommandError("PeerError").
// Its udp_port is the destination's base port; queues: its queue count.
transport::PeerAddress peer_fabric_from_accept(const nlohmann::json& accept, uint16_t& queues);

}  // namespace mm::control
