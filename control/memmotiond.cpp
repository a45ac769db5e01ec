// memmotiond: the MemoryMotion daemon. Starts EAL and the fabric port from a
// NIC profile, launches the dataplane worker lcore, and serves the control
// socket on the main lcore until told to stop.
#include <rte_eal.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <bit>
#include <csignal>
#include <iostream>
#include <map>
#include <string>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <grp.h>
#include <toml.hpp>

#include "control/ControlServer.hpp"
#include "control/Psk.hpp"
#include "control/SessionJson.hpp"
#include "dataplane/engine/Engine.hpp"
#include "dataplane/pages/CompressdevDeflate.hpp"
#include "dataplane/pages/DedupeDictionary.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/port/Eal.hpp"
#include "dataplane/port/EthPort.hpp"
#include "dataplane/port/NicProfile.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace {

// The compressdev DEFLATE pages go through: the one the profile's
// [offload] brought up (EAL probed it), if any.
std::string compressdev_name(const mm::port::NicProfile& profile) {
  if (profile.offload.compressdev == "none") return {};
  return mm::pages::first_compressdev();
}

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
          {"rx_not_mmp", s.rx_not_mmp}, {"rx_malformed", s.rx_malformed},
          {"tx_by_reference", s.tx_by_reference}, {"tx_copied_busy", s.tx_copied_busy}};
}

std::string resolve_profile(const std::string& name) {
  // A bare name ("af_packet-veth") means a profile shipped with the project.
  if (name.find('/') != std::string::npos || name.ends_with(".toml")) return name;
  return std::string(MEMMOTION_PROFILE_DIR) + "/" + name + ".toml";
}

// Settings from --config (TOML), overridden by the command line.
struct Settings {
  std::string profile = "af_packet-veth";
  std::map<std::string, std::string> vars;
  std::string ip;
  int udp_port = -1;
  std::string control = "/run/memmotion/control.sock";
  std::string name = "memmotiond";
  std::string key_file, peer_listen, metrics, run_dir;
  std::string encrypt = "required";
  std::string cipher = "auto";
  std::string x509_dir;
  std::string control_group;  // "" = the daemon's own group
  int dedupe_reserve = 4;      // dedupe rings of the default size made ready at start
  std::string store_budget = "2G";  // the page store's budget (0: off)
  std::string store = "memory";     // ... kept in memory or in files under <run_dir>/store
};

// A group name or number -> gid; throws naming it when there is none.
int resolve_group(const std::string& g) {
  if (g.empty()) return -1;
  if (g.find_first_not_of("0123456789") == std::string::npos && g.size() < 10) return std::stoi(g);
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (::getgrnam_r(g.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) {
    throw std::invalid_argument("control group '" + g + "': no such group");
  }
  return int(found->gr_gid);
}

void load_config(const std::string& path, Settings& s) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument(path + ": cannot read it");
  std::stringstream text;
  text << f.rdbuf();
  toml::value root;
  try {
    mm::port::require_utf8(text.view());  // before toml11 sees it (see first_invalid_utf8)
    root = toml::parse(text, path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": malformed TOML: " + std::string(e.what()).substr(0, 200));
  }
  if (!root.is_table()) throw std::invalid_argument(path + ": not a TOML table");
  for (const auto& [k, v] : root.as_table()) {
    auto str = [&, k = k, v = v]() {
      if (!v.is_string()) throw std::invalid_argument(path + ": " + k + ": must be a string");
      return v.as_string().str;
    };
    if (k == "profile") s.profile = str();
    else if (k == "ip") s.ip = str();
    else if (k == "control") s.control = str();
    else if (k == "name") s.name = str();
    else if (k == "key_file") s.key_file = str();
    else if (k == "peer_listen") s.peer_listen = str();
    else if (k == "metrics") s.metrics = str();
    else if (k == "run_dir") s.run_dir = str();
    else if (k == "encrypt") s.encrypt = str();
    else if (k == "cipher") s.cipher = str();
    else if (k == "x509_dir") s.x509_dir = str();
    else if (k == "control_group") s.control_group = str();
    else if (k == "store_budget") s.store_budget = str();
    else if (k == "store") s.store = str();
    else if (k == "udp_port") {
      if (!v.is_integer()) throw std::invalid_argument(path + ": udp_port: must be an integer");
      s.udp_port = int(v.as_integer());
    } else if (k == "dedupe_reserve") {
      if (!v.is_integer()) throw std::invalid_argument(path + ": dedupe_reserve: must be an integer");
      const int64_t n = v.as_integer();
      if (n < 0 || n > 64) throw std::invalid_argument(path + ": dedupe_reserve: must be 0..64");
      s.dedupe_reserve = int(n);
    } else if (k == "set") {
      if (!v.is_table()) throw std::invalid_argument(path + ": set: must be a table of profile variables");
      for (const auto& [vk, vv] : v.as_table()) {
        if (!vv.is_string()) throw std::invalid_argument(path + ": set." + vk + ": must be a string");
        s.vars[vk] = vv.as_string().str;
      }
    } else {
      throw std::invalid_argument(path + ": " + k + ": unknown key (known: profile, ip, udp_port, control, "
                                  "name, key_file, x509_dir, peer_listen, metrics, run_dir, encrypt, cipher, control_group, dedupe_reserve, store, store_budget, set)");
    }
  }
}

std::string mac_text(const std::array<uint8_t, 6>& m) {
  char b[20];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"memmotiond: the MemoryMotion migration dataplane"};
  Settings cfg;
  std::string config_path, profile_name, ip_text, control_path, name, key_file, peer_listen, metrics,
      run_dir, encrypt, cipher, x509_dir, control_group, store_budget, store_kind;
  std::vector<std::string> sets;
  int udp_port = -1;
  int dedupe_reserve = -1;
  app.add_option("--config", config_path, "TOML settings file (command-line options override it)");
  app.add_option("-p,--profile", profile_name, "NIC profile: a shipped name or a .toml path (default af_packet-veth)");
  app.add_option("--set", sets, "profile variable NAME=VALUE (e.g. iface=eth1)");
  app.add_option("--ip", ip_text, "this host's fabric IPv4 address");
  app.add_option("--udp-port", udp_port, "fabric UDP base port (default: the profile's)");
  app.add_option("-c,--control", control_path, "control socket path (default /run/memmotion/control.sock)");
  app.add_option("-n,--name", name, "instance name (logs, DPDK file prefix)");
  app.add_option("--key-file", key_file, "pre-shared key for the peer channel (mode 0600): TLS 1.3 external PSK");
  app.add_option("--x509-dir", x509_dir, "certificates for the peer channel's TLS 1.3 instead, in QEMU's layout "
                                         "(e.g. /etc/pki/qemu: ca-cert.pem, server-cert.pem, server-key.pem, "
                                         "client-cert.pem, client-key.pem)");
  app.add_option("--peer-listen", peer_listen, "ip:port where peers reach this daemon");
  app.add_option("--metrics", metrics, "ip:port of the Prometheus endpoint (e.g. 127.0.0.1:9470)");
  app.add_option("--control-group", control_group,
                 "group that may use the control socket (name or number; default: the daemon's own)");
  app.add_option("--run-dir", run_dir, "directory for per-session sockets (default: the control socket's)");
  app.add_option("--encrypt", encrypt, "AES-256-GCM for sessions negotiated over the peer channel: required "
                                       "(default) or off; a peer with the other setting is refused");
  app.add_option("--cipher", cipher, "code for the AES-256-GCM of encrypted sessions: auto (default: "
                                     "intel-ipsec-mb where the CPU has AES-NI, else OpenSSL), openssl or "
                                     "ipsec-mb; the records are the same, peers may differ");
  app.add_option("--dedupe-reserve", dedupe_reserve,
                 "dedupe rings (64 MiB each, the default dedupe-slots) made ready at start, so the first "
                 "sessions' dictionaries need no fresh memory (0..64, default 4; one per stream and end)")
      ->check(CLI::Range(0, 64));
  app.add_option("--store-budget", store_budget,
                 "bytes the page store may hold: the last image of each VM migrated from here, "
                 "for later migrations back (e.g. 2G, the default; 0: off)");
  app.add_option("--store", store_kind, "where the page store keeps its bytes: memory (default) or file "
                                        "(files of mode 0600 under <run-dir>/store)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  mm::port::NicProfile profile;
  uint32_t ip = 0;
  int control_gid = -1;
  mm::control::Bytes key;
  mm::wire::CipherEngine cipher_engine = mm::wire::CipherEngine::automatic;
  mm::store::StoreConfig store_cfg;
  try {
    if (!config_path.empty()) load_config(config_path, cfg);
    if (!profile_name.empty()) cfg.profile = profile_name;
    if (!ip_text.empty()) cfg.ip = ip_text;
    if (udp_port != -1) cfg.udp_port = udp_port;
    if (dedupe_reserve != -1) cfg.dedupe_reserve = dedupe_reserve;
    if (!control_path.empty()) cfg.control = control_path;
    if (!name.empty()) cfg.name = name;
    if (!key_file.empty()) cfg.key_file = key_file;
    if (!peer_listen.empty()) cfg.peer_listen = peer_listen;
    if (!metrics.empty()) cfg.metrics = metrics;
    if (!run_dir.empty()) cfg.run_dir = run_dir;
    if (!encrypt.empty()) cfg.encrypt = encrypt;
    if (!cipher.empty()) cfg.cipher = cipher;
    if (!x509_dir.empty()) cfg.x509_dir = x509_dir;
    if (!cfg.x509_dir.empty() && !cfg.key_file.empty()) {
      throw std::invalid_argument("give --key-file or --x509-dir for the peer channel, not both");
    }
    if (cfg.encrypt != "required" && cfg.encrypt != "off") {
      throw std::invalid_argument("--encrypt must be 'required' or 'off', not '" + cfg.encrypt + "'");
    }
    if (!mm::wire::parse_cipher_engine(cfg.cipher, cipher_engine)) {
      throw std::invalid_argument("--cipher must be 'auto', 'openssl' or 'ipsec-mb', not '" + cfg.cipher + "'");
    }
    // Asked for by name, it must work here: refused now, not at the first session.
    if (cipher_engine == mm::wire::CipherEngine::ipsec_mb) {
      mm::wire::PacketCipher probe(mm::wire::CipherKey{}, mm::wire::Direction::source_to_destination, true,
                                   cipher_engine);
    }
    if (!control_group.empty()) cfg.control_group = control_group;
    if (!store_budget.empty()) cfg.store_budget = store_budget;
    if (!store_kind.empty()) cfg.store = store_kind;
    try {
      store_cfg.budget = mm::store::parse_bytes(cfg.store_budget);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--store-budget: ") + e.what());
    }
    if (cfg.store != "memory" && cfg.store != "file") {
      throw std::invalid_argument("--store must be 'memory' or 'file', not '" + cfg.store + "'");
    }
    store_cfg.backing = cfg.store == "file" ? mm::store::Backing::file : mm::store::Backing::memory;
    if (cfg.run_dir.empty()) cfg.run_dir = std::filesystem::path(cfg.control).parent_path().string();
    for (const auto& s : sets) {
      const auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw std::invalid_argument("--set " + s + ": expected NAME=VALUE");
      }
      cfg.vars[s.substr(0, eq)] = s.substr(eq + 1);
    }
    if (cfg.ip.empty()) throw std::invalid_argument("--ip (or ip in --config) is required");
    profile = mm::port::load_profile(resolve_profile(cfg.profile), cfg.vars,
                                     {{"ebpf_dir", MEMMOTION_EBPF_DIR}});
    ip = mm::control::parse_ipv4(cfg.ip);
    if (cfg.udp_port > 65535 || cfg.udp_port == 0) throw std::invalid_argument("--udp-port must be 1..65535");
    if (!cfg.key_file.empty()) key = mm::control::load_key_file(cfg.key_file);
    control_gid = resolve_group(cfg.control_group);
  } catch (const std::exception& e) {
    std::cerr << "memmotiond: " << e.what() << std::endl;
    return 2;
  }
  name = cfg.name;
  control_path = cfg.control;
  udp_port = cfg.udp_port;
  const uint16_t base_port = uint16_t(udp_port > 0 ? udp_port : profile.fabric.udp_base_port);

  try {
    mm::port::init_eal(mm::port::eal_arguments(profile, "mm-" + name));
    // Before the control socket opens: a session the daemon takes finds them.
    mm::pages::DedupeDictionary::reserve(mm::pages::PagePolicy{}.dedupe_slots, unsigned(cfg.dedupe_reserve));
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
      ec.compressdev = compressdev_name(profile);
      auto& t = ec.transport;
      t.window = profile.transport.window;
      t.ack_every = profile.transport.ack_every;
      t.rto_min_ns = uint64_t(profile.transport.rto_min_us) * 1000;
      t.rto_max_ns = uint64_t(profile.transport.rto_max_us) * 1000;
      t.dead_timeout_ns = uint64_t(profile.transport.dead_timeout_ms) * 1'000'000;
      t.max_payload = port->max_datagram() - uint32_t(mm::wire::kHeaderSize);
      // A message is queued whole: a window that cannot hold the largest
      // one would stall its stream for good.
      if (size_t(t.window) * t.max_payload < mm::engine::kMaxMessage) {
        const size_t need = (mm::engine::kMaxMessage + t.max_payload - 1) / t.max_payload;
        throw std::runtime_error("transport.window = " + std::to_string(t.window) + " packets of " +
                                 std::to_string(t.max_payload) + " bytes cannot hold a " +
                                 std::to_string(mm::engine::kMaxMessage) +
                                 "-byte message: profile " + profile.name + " needs a window of at least " +
                                 std::to_string(std::bit_ceil(need)) + " at this MTU");
      }
      const uint16_t workers = port->queues();
      if (!ec.compressdev.empty()) {
        // One queue pair per worker; a device with fewer leaves DEFLATE to
        // the first ones (the others refuse it by name).
        const uint16_t qps = mm::pages::CompressdevDeflate::configure_device(ec.compressdev, workers);
        if (qps < workers) {
          std::cerr << "memmotiond: compressdev " << ec.compressdev << " has " << qps
                    << " queue pair(s) for " << workers << " workers: DEFLATE on the first " << qps << std::endl;
        }
      }
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
      id.queue_stats = [p] {
        nlohmann::json list = nlohmann::json::array();
        for (uint16_t q = 0; q < p->queues(); ++q) list.push_back(port_stats_json(p->queue(q).stats()));
        return list;
      };
      id.compressdev = compressdev_name(profile);
      id.caps.version = MEMMOTION_VERSION;
      id.caps.mmp = mm::wire::kVersion;
      id.caps.mtu = profile.port.mtu;
      id.caps.queues = p->queues();
      id.caps.ip = cfg.ip;
      id.caps.mac = mac_text(p->local_address().mac);
      id.caps.udp_port = base_port;
      id.peer_creds.psk = key;
      id.peer_creds.x509_dir = cfg.x509_dir;
      id.peer_listen = cfg.peer_listen;
      id.metrics_listen = cfg.metrics;
      id.run_dir = cfg.run_dir;
      id.encrypt = cfg.encrypt == "required";
      id.cipher = cipher_engine;
      id.control_gid = control_gid;
      id.store = store_cfg;
      id.store.dir = cfg.run_dir + "/store";
      mm::control::ControlServer server(control_path, engine_ptrs, id);
      for (size_t w = 0; w < engines.size(); ++w) {
        rte_eal_remote_launch(worker_main, engines[w].get(), lcores[w]);
      }
      std::cerr << "memmotiond[" << name << "]: " << port->describe() << ", " << engines.size()
                << " worker(s), UDP base port " << base_port << ", control socket " << control_path
                << (cfg.peer_listen.empty() ? "" : ", peers at " + cfg.peer_listen)
                << (cfg.metrics.empty() ? "" : ", metrics at http://" + cfg.metrics + "/metrics")
                << (key.empty() ? ", no peer key" : "") << std::endl;
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
  mm::pages::CompressdevDeflate::stop_devices();
  mm::port::cleanup_eal();
  std::cerr << "memmotiond[" << name << "]: stopped" << std::endl;
  return rc;
}
