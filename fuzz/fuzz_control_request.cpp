// Control-socket requests (control/README.md "Control commands") as the
// daemon reads them: the input is the bytes a client sends, cut into lines
// as ControlServer::run() cuts them; each line goes through the request's
// shape check and, for the commands that carry them, the argument checks
// that need no running engine (control/ControlRequest.hpp: session
// arguments, page policy, MAC and IPv4 text). Property: every refusal is a
// CommandError with a class and a message; nothing else escapes.
#include <string>
#include <string_view>

#include "control/ControlRequest.hpp"
#include "control/SessionJson.hpp"
#include "fuzz/FuzzCheck.hpp"

using namespace mm::control;
using nlohmann::json;

namespace {

void one_request(std::string_view line) {
  try {
    const Request r = parse_request_line(line);
    if (r.command == "session-prepare" || r.command == "session-start") {
      const auto p = session_params_from_args(r.command == "session-start", r.args, 7470, 2);
      MM_FUZZ_CHECK(p.id != 0);
    } else if (r.command == "query-session" || r.command == "session-cancel") {
      no_other_args(r.args, {"session"});
      MM_FUZZ_CHECK(session_arg(r.args) != 0);
    } else if (r.command == "migrate") {
      session_arg(r.args);
      string_arg(r.args, "peer");
      uint_arg_or(r.args, "max-bandwidth", uint64_t(1) << 50, 0);
      uint_arg_or(r.args, "downtime-limit", 600000, 300);
      double_arg_or(r.args, "postcopy-after", 86400, 0);
      if (r.args.contains("pages")) {
        try {
          to_json(page_policy_from_json(r.args["pages"]));
        } catch (const std::invalid_argument& e) {
          MM_FUZZ_CHECK(*e.what() != 0);
        }
      }
    }
  } catch (const CommandError& e) {
    MM_FUZZ_CHECK(!e.error_class().empty() && *e.what() != 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (size_t nl; (nl = in.find('\n')) != std::string_view::npos; in.remove_prefix(nl + 1)) {
    const std::string_view line = in.substr(0, nl);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    one_request(line);
  }
  return 0;
}
