#include "dataplane/port/Eal.hpp"

#include <rte_eal.h>
#include <rte_errno.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace mm::port {

void init_eal(const std::vector<std::string>& args) {
  // rte_eal_init keeps pointers into argv: the strings must outlive EAL.
  static std::vector<std::string> keep;
  static std::vector<char*> argv;
  if (!keep.empty()) throw std::logic_error("EAL is already initialised");
  keep = args;
  for (auto& s : keep) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::string joined;
  for (const auto& s : args) joined += " " + s;
  if (rte_eal_init(int(keep.size()), argv.data()) < 0) {
    throw std::runtime_error(std::string("DPDK EAL start-up failed: ") + rte_strerror(rte_errno) +
                             " (arguments:" + joined + ")");
  }
}

void cleanup_eal() {
  // EAL leaves its runtime directory (/run/dpdk/<file-prefix>, config and
  // memseg files: megabytes of tmpfs) behind; a daemon started many times
  // would fill /run. Nothing else uses this prefix once we are done.
  const std::string dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}

}  // namespace mm::port
