// memmotiond: the MemoryMotion daemon. Starts EAL and the fabric port from a
// NIC profile, launches the dataplane worker lcore, and serves the control
// socket on the main lcore until told to stop.
#include <rte_eal.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>
#include <map>
#include <string>

#include "control/ControlServer.hpp"
#include "control/SessionJson.hpp"
#include "dataplane/engine/Engine.hpp"
#include "dataplane/port/Eal.hpp"
#include "dataplane/port/EthPort.hpp"
#include "dataplane/port/NicProfile.hpp"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_worker_stop{false};

void on_signal(int) { g_stop = true; }

int worker_main(void* arg) {
  static_cast<mm::engine::Engine*>(arg)->run(g_worker_stop);
  return 0;
}

nlohmann::json port_stats_json(const mm::port::PortStats& s) {
  return {{"rx_frames", s.rx_frames},     {"rx_bytes", s.rx_bytes},   {"tx_frames", s.tx_frames},
          {"tx_bytes", s.tx_bytes},       {"tx_full", s.tx_full},     {"tx_nombuf", s.tx_nombuf},
          {"rx_not_mmp", s.rx_not_mmp}, {"rx_malformed", s.rx_malformed}};
}

std::string resolve_profile(const std::string& name) {
  // A bare name ("af_packet-veth") means a profile shipped with the project.
  if (name.find('/') != std::string::npos || name.ends_with(".toml")) return name;
  return std::string(MEMMOTION_PROFILE_DIR) + "/" + name + ".toml";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"memmotiond: the MemoryMotion migration dataplane"};
  std::string profile_name = "af_packet-veth";
  std::vector<std::string> sets;
  std::string ip_text;
  int udp_port = -1;
  std::string control_path = "/run/memmotion/control.sock";
  std::string name = "memmotiond";
  app.add_option("-p,--profile", profile_name, "NIC profile: a shipped name or a .toml path")
      ->capture_default_str();
  app.add_option("--set", sets, "profile variable NAME=VALUE (e.g. iface=eth1)");
  app.add_option("--ip", ip_text, "this host's fabric IPv4 address")->required();
  app.add_option("--udp-port", udp_port, "fabric UDP base port (default: the profile's)");
  app.add_option("-c,--control", control_path, "control socket path")->capture_default_str();
  app.add_option("-n,--name", name, "instance name (logs, DPDK file prefix)")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  mm::port::NicProfile profile;
  uint32_t ip = 0;
  try {
    std::map<std::string, std::string> vars;
    for (const auto& s : sets) {
      const auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw std::invalid_argument("--set " + s + ": expected NAME=VALUE");
      }
      vars[s.substr(0, eq)] = s.substr(eq + 1);
    }
    profile = mm::port::load_profile(resolve_profile(profile_name), vars,
                                     {{"ebpf_dir", MEMMOTION_EBPF_DIR}});
    ip = mm::control::parse_ipv4(ip_text);
    if (udp_port > 65535 || udp_port == 0) throw std::invalid_argument("--udp-port must be 1..65535");
  } catch (const std::exception& e) {
    std::cerr << "memmotiond: " << e.what() << std::endl;
    return 2;
  }
  const uint16_t base_port = uint16_t(udp_port > 0 ? udp_port : profile.fabric.udp_base_port);

  try {
    mm::port::init_eal(mm::port::eal_arguments(profile, "mm-" + name));
  } catch (const std::exception& e) {
    std::cerr << "memmotiond: " << e.what() << std::endl;
    return 1;
  }
  int rc = 0;
  {
    std::unique_ptr<mm::port::EthPort> port;
    std::vector<std::unique_ptr<mm::engine::Engine>> engines;
    std::vector<mm::engine::Engine*> engine_ptrs;
    try {
      port = std::make_unique<mm::port::EthPort>(profile, ip, base_port);
      mm::engine::EngineConfig ec;
      ec.idle = profile.engine.idle == "spin" ? mm::engine::IdlePolicy::spin
                                              : mm::engine::IdlePolicy::backoff;
      ec.backoff_max_us = profile.engine.backoff_max_us;
      auto& t = ec.transport;
      t.window = profile.transport.window;
      t.ack_every = profile.transport.ack_every;
      t.rto_min_ns = uint64_t(profile.transport.rto_min_us) * 1000;
      t.rto_max_ns = uint64_t(profile.transport.rto_max_us) * 1000;
      t.dead_timeout_ns = uint64_t(profile.transport.dead_timeout_ms) * 1'000'000;
      t.max_payload = port->max_datagram() - uint32_t(mm::wire::kHeaderSize);
      const uint16_t workers = port->queues();
      for (uint16_t w = 0; w < workers; ++w) {
        engines.push_back(std::make_unique<mm::engine::Engine>(port->queue(w), ec, w, workers));
        engine_ptrs.push_back(engines.back().get());
      }
      for (auto& e : engines) e->connect(engine_ptrs);
    } catch (const std::exception& e) {
      std::cerr << "memmotiond: " << e.what() << std::endl;
      engines.clear();
      port.reset();
      mm::port::cleanup_eal();
      return 1;
    }
    // Worker w runs on the w-th lcore after the main one.
    std::vector<unsigned> lcores;
    for (unsigned l = rte_get_next_lcore(-1, 1, 0); l < RTE_MAX_LCORE && lcores.size() < engines.size();
         l = rte_get_next_lcore(l, 1, 0)) {
      lcores.push_back(l);
    }
    if (lcores.size() < engines.size()) {
      std::cerr << "memmotiond: the profile's eal.lcores gives " << lcores.size()
                << " worker lcores besides the main one, but " << engines.size()
                << " workers are configured" << std::endl;
      engines.clear();
      port.reset();
      mm::port::cleanup_eal();
      return 2;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);
    try {
      mm::control::DaemonIdentity id;
      id.name = name;
      id.udp_base_port = base_port;
      id.port_description = port->describe();
      mm::port::EthPort* p = port.get();
      id.port_stats = [p] { return port_stats_json(p->stats()); };
      mm::control::ControlServer server(control_path, engine_ptrs, id);
      for (size_t w = 0; w < engines.size(); ++w) {
        rte_eal_remote_launch(worker_main, engines[w].get(), lcores[w]);
      }
      std::cerr << "memmotiond[" << name << "]: " << port->describe() << ", " << engines.size()
                << " worker(s), UDP base port " << base_port << ", control socket " << control_path
                << std::endl;
      server.run(g_stop);
    } catch (const std::exception& e) {
      std::cerr << "memmotiond: " << e.what() << std::endl;
      rc = 1;
    }
    g_worker_stop = true;
    rte_eal_mp_wait_lcore();
    engines.clear();
    port.reset();
  }
  mm::port::cleanup_eal();
  std::cerr << "memmotiond[" << name << "]: stopped" << std::endl;
  return rc;
}
