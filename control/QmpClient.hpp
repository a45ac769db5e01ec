// A blocking QMP client for driving a local QEMU from the control plane
// (capabilities, parameters, migrate / migrate-incoming, progress).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "control/JsonLines.hpp"

namespace mm::control {

class QmpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class QmpClient {
 public:
  // Connects to QEMU's QMP unix socket and negotiates capabilities.
  // Throws QmpError with the path and reason.
  QmpClient(const std::string& path, int timeout_ms = 5000);
  // Runs one command; returns "return", throws QmpError with QEMU's class
  // and desc. Events that arrive meanwhile are skipped.
  nlohmann::json execute(const std::string& cmd, const nlohmann::json& args = nlohmann::json::object());
  void set_capabilities(const nlohmann::json& caps);  // {"return-path": true, ...}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<JsonLines> io_;
};

}  // namespace mm::control
