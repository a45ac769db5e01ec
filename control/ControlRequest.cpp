#include "control/ControlRequest.hpp"

#include <algorithm>

#include "control/PeerChannel.hpp"
#include "control/SessionJson.hpp"

namespace mm::control {

using nlohmann::json;

Request parse_request(const json& request) {
  if (!request.is_object()) throw CommandError("GenericError", "a request must be a JSON object");
  auto exe = request.find("execute");
  if (exe == request.end() || !exe->is_string()) {
    throw CommandError("GenericError", "a request needs 'execute' with a command name string");
  }
  for (auto& [k, v] : request.items()) {
    if (k != "execute" && k != "arguments" && k != "id") {
      throw CommandError("GenericError", "unknown request member '" + k + "'");
    }
  }
  Request r;
  r.command = exe->get<std::string>();
  if (auto a = request.find("arguments"); a != request.end()) {
    if (!a->is_object()) throw CommandError("GenericError", "'arguments' must be an object");
    r.args = *a;
  }
  return r;
}

json parse_request_json(std::string_view line) {
  try {
    return json::parse(line);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw CommandError("GenericError", std::string("malformed JSON: ") + e.what());
  }
}

Request parse_request_line(std::string_view line) {
  return parse_request(parse_request_json(line));
}

const json& arg(const json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end())
    throw CommandError("InvalidParameter", std::string("missing argument '") + name + "'");
  return *it;
}

uint64_t uint_arg(const json& args, const char* name, uint64_t max, uint64_t min) {
  const json& v = arg(args, name);
  if (!v.is_number_unsigned() || v.get<uint64_t>() > max || v.get<uint64_t>() < min) {
    throw CommandError("InvalidParameter", std::string("argument '") + name +
                                               "' must be an integer in " + std::to_string(min) +
                                               ".." + std::to_string(max));
  }
  return v.get<uint64_t>();
}

uint64_t uint_arg_or(const json& args, const char* name, uint64_t max, uint64_t dflt) {
  return args.contains(name) ? uint_arg(args, name, max, 1) : dflt;
}

double double_arg_or(const json& args, const char* name, double max, double dflt) {
  if (!args.contains(name)) return dflt;
  const json& v = args[name];
  if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > max) {
    throw CommandError("InvalidParameter", std::string("argument '") + name +
                                               "' must be a number in 0.." +
                                               std::to_string(int64_t(max)));
  }
  return v.get<double>();
}

bool bool_arg_or(const json& args, const char* name, bool dflt) {
  if (!args.contains(name)) return dflt;
  const json& v = args[name];
  if (!v.is_boolean()) throw CommandError("InvalidParameter", std::string("argument '") + name + "' must be true or false");
  return v.get<bool>();
}

std::string string_arg(const json& args, const char* name) {
  const json& v = arg(args, name);
  if (!v.is_string())
    throw CommandError("InvalidParameter", std::string("argument '") + name + "' must be a string");
  return v.get<std::string>();
}

void no_other_args(const json& args, std::initializer_list<const char*> known) {
  for (auto& [k, v] : args.items()) {
    bool ok = false;
    for (const char* n : known) ok |= k == n;
    if (!ok) throw CommandError("InvalidParameter", "unknown argument '" + k + "'");
  }
}

uint32_t session_arg(const json& args) {
  return uint32_t(uint_arg(args, "session", UINT32_MAX, 1));
}

std::string vm_arg(const json& args) {
  const std::string vm = string_arg(args, "vm");
  if (vm.empty() || vm.size() > 128) throw CommandError("InvalidParameter", "'vm' must be 1..128 characters");
  for (unsigned char c : vm) {
    if (c < 0x21 || c > 0x7e) {
      throw CommandError("InvalidParameter", "'vm' must be printable ASCII without spaces");
    }
  }
  return vm;
}

engine::SessionParams session_params_from_args(bool source, const json& args,
                                               uint16_t udp_base_port, uint16_t queues) {
  if (source) {
    no_other_args(args, {"session", "listen", "peer-ip", "peer-mac", "peer-udp-port", "peer-queues",
                         "max-bandwidth", "pages", "vm", "postcopy-preempt"});
  } else {
    // pages: the source's policy (with its unchanged filter on, PAGE_SAME
    // records come and the destination checks them).
    // postcopy-preempt: both QEMUs have the capability (the destination
    // opens the channel to its QEMU only when told).
    no_other_args(args, {"session", "qemu-uri", "peer-udp-port", "peer-queues", "max-bandwidth", "pages",
                         "postcopy-preempt"});
  }
  engine::SessionParams p;
  p.id = session_arg(args);
  p.role = source ? engine::Role::source : engine::Role::destination;
  p.qemu_uri = string_arg(args, source ? "listen" : "qemu-uri");
  // dataplane/wire/MMP.md "Encapsulation": a stream's packets go to base_port + the queue of the
  // peer's worker that owns it (wire::stream_queue, the same rule on both sides).
  const uint64_t peer_base = uint_arg_or(args, "peer-udp-port", 65535, udp_base_port);
  const uint64_t peer_queues = std::max<uint64_t>(1, uint_arg_or(args, "peer-queues", 64, std::max<uint16_t>(1, queues)));
  if (peer_base + peer_queues - 1 > 65535) {
    throw CommandError("InvalidParameter", "peer-udp-port + the peer's queues exceed 65535");
  }
  const uint16_t peer_port = uint16_t(peer_base);
  p.peer_queues = uint16_t(peer_queues);
  p.max_bandwidth =
      args.contains("max-bandwidth") ? uint_arg(args, "max-bandwidth", uint64_t(1) << 50) : 0;
  if (args.contains("vm")) p.vm = vm_arg(args);
  p.postcopy_preempt = bool_arg_or(args, "postcopy-preempt", false);
  try {
    if (args.contains("pages")) p.pages = page_policy_from_json(args["pages"]);
    if (source) {
      p.peer.ip = parse_ipv4(string_arg(args, "peer-ip"));
      if (args.contains("peer-mac")) p.peer.mac = parse_mac(string_arg(args, "peer-mac"));
      p.peer.udp_port = peer_port;
    } else {
      p.peer_udp_port = peer_port;
    }
  } catch (const std::invalid_argument& e) {
    throw CommandError("InvalidParameter", e.what());
  }
  return p;
}

namespace {
// An unsigned member of a peer's message within [0, max], or dflt when
// absent; anything else (negative, fractional, a string) is refused.
uint64_t peer_uint(const json& j, const char* name, uint64_t max, uint64_t dflt, const char* what) {
  auto it = j.find(name);
  if (it == j.end()) return dflt;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    throw PeerError("PeerError", std::string(what) + " with an invalid '" + name + "' (0.." +
                                     std::to_string(max) + ")");
  }
  return it->get<uint64_t>();
}

std::string peer_string(const json& j, const char* name, const char* what) {
  auto it = j.find(name);
  if (it == j.end()) return {};
  if (!it->is_string())
    throw PeerError("PeerError", std::string(what) + " with a non-string '" + name + "'");
  return it->get<std::string>();
}

const json& peer_object(const json& j, const char* name, const char* what) {
  static const json empty = json::object();
  auto it = j.find(name);
  if (it == j.end()) return empty;
  if (!it->is_object())
    throw PeerError("PeerError", std::string(what) + " whose '" + name + "' is not an object");
  return *it;
}
}  // namespace

SessionOffer parse_session_offer(const json& offer, bool have_compressdev, uint16_t udp_base_port) {
  constexpr const char* what = "offer";
  if (!offer.is_object()) throw PeerError("PeerError", "an offer must be a JSON object");
  SessionOffer o;
  const uint64_t id = peer_uint(offer, "session", UINT32_MAX, 0, what);
  if (id == 0) throw PeerError("PeerError", "offer without a valid session id");
  o.session = uint32_t(id);
  if (offer.contains("pages")) {
    try {
      o.pages = page_policy_from_json(offer["pages"]);
    } catch (const std::invalid_argument& e) {
      throw PeerError("PeerError", std::string("the offer's page policy: ") + e.what());
    }
    if (o.pages.codec == pages::CodecKind::deflate && !have_compressdev) {
      throw PeerError("PeerError",
                      "the destination has no compressdev for DEFLATE pages "
                      "(NIC profile [offload] compressdev)");
    }
  }
  o.has_dst_qmp = offer.contains("dst-qmp");
  o.dst_qmp = peer_string(offer, "dst-qmp", what);
  o.dst_incoming = peer_string(offer, "dst-incoming", what);
  o.multifd_channels =
      peer_uint(offer, "multifd-channels", engine::Session::kMaxMultifdChannels, 0, what);
  if (auto it = offer.find("postcopy"); it != offer.end()) {
    if (!it->is_boolean()) throw PeerError("PeerError", "offer with a non-boolean 'postcopy'");
    o.postcopy = it->get<bool>();
  }
  if (auto it = offer.find("postcopy-preempt"); it != offer.end()) {
    if (!it->is_boolean()) throw PeerError("PeerError", "offer with a non-boolean 'postcopy-preempt'");
    o.postcopy_preempt = it->get<bool>();
    if (o.postcopy_preempt && !o.postcopy) throw PeerError("PeerError", "offer with 'postcopy-preempt' but no 'postcopy'");
  }
  // Answers go to the source's workers that own the streams (base port +
  // wire::stream_queue).
  const json& fab = peer_object(offer, "fabric", what);
  const uint64_t queues = std::max<uint64_t>(1, peer_uint(fab, "queues", 64, 1, "offer fabric"));
  const uint64_t port = peer_uint(fab, "udp_port", 65535, udp_base_port, "offer fabric");
  if (port + queues - 1 > 65535)
    throw PeerError("PeerError", "offer fabric: udp_port + the source's queues exceed 65535");
  o.peer_udp_port = uint16_t(port);
  o.peer_queues = uint16_t(queues);
  if (offer.contains("vm")) {
    try {
      o.vm = vm_arg(offer);
    } catch (const CommandError& e) {
      throw PeerError("PeerError", std::string("offer: ") + e.what());
    }
  }
  return o;
}

transport::PeerAddress peer_fabric_from_accept(const json& accept, uint16_t& queues_out) {
  transport::PeerAddress a;
  try {
    if (!accept.is_object()) throw PeerError("PeerError", "the accept is not a JSON object");
    const json& fab = peer_object(accept, "fabric", "accept");
    a.ip = parse_ipv4(peer_string(fab, "ip", "accept fabric"));
    a.mac = parse_mac(peer_string(fab, "mac", "accept fabric"));
    const uint64_t queues = std::max<uint64_t>(1, peer_uint(fab, "queues", 64, 1, "accept fabric"));
    const uint64_t port = peer_uint(fab, "udp_port", 65535, 0, "accept fabric");
    if (port == 0 || port + queues - 1 > 65535) throw PeerError("PeerError", "udp_port missing, or its queues beyond 65535");
    a.udp_port = uint16_t(port);
    queues_out = uint16_t(queues);
  } catch (const PeerError& e) {
    throw CommandError("PeerError", std::string("the destination's fabric address: ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw CommandError("PeerError", std::string("the destination's fabric address: ") + e.what());
  }
  return a;
}

}  // namespace mm::control
