#include "control/QmpClient.hpp"

namespace mm::control {

using nlohmann::json;

QmpClient::QmpClient(const std::string& path, int timeout_ms) : path_(path) {
  try {
    io_ = std::make_unique<JsonLines>(JsonLines::connect_unix(path, timeout_ms), timeout_ms);
    const json greeting = io_->read();
    if (!greeting.contains("QMP")) throw QmpError(path + " is not a QMP socket");
    execute("qmp_capabilities");
  } catch (const QmpError&) {
    throw;
  } catch (const std::exception& e) {
    throw QmpError("QMP " + path + ": " + e.what());
  }
}

json QmpClient::execute(const std::string& cmd, const json& args) {
  json req = {{"execute", cmd}};
  if (!args.empty()) req["arguments"] = args;
  try {
    io_->write(req);
    for (;;) {
      json m = io_->read();
      if (m.contains("event")) continue;
      if (m.contains("error")) {
        throw QmpError("QEMU (" + path_ + ") refused " + cmd + ": " +
                       m["error"].value("desc", m["error"].dump()));
      }
      return m.value("return", json::object());
    }
  } catch (const QmpError&) {
    throw;
  } catch (const std::exception& e) {
    throw QmpError("QMP " + path_ + " (" + cmd + "): " + e.what());
  }
}

void QmpClient::set_capabilities(const json& caps) {
  json list = json::array();
  for (auto& [k, v] : caps.items()) list.push_back({{"capability", k}, {"state", v}});
  execute("migrate-set-capabilities", {{"capabilities", list}});
}

}  // namespace mm::control
