#include "dataplane/port/NicProfile.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

namespace mm::port {

namespace {

// A TOML table read strictly: every key read is remembered so that the
// ones nobody asked for can be reported as unknown.
class Table {
 public:
  Table(const toml::value* v, std::string file, std::string prefix)
      : v_(v), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const { return v_ && v_->is_table() && v_->contains(key); }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ProfileError(file_ + ": " + prefix_ + key + ": " + what);
  }

  const toml::value* raw(const std::string& key) {
    seen_.insert(key);
    return has(key) ? &v_->at(key) : nullptr;
  }

  int64_t integer(const std::string& key, int64_t min, int64_t max, int64_t dflt) {
    const toml::value* x = raw(key);
    if (!x) return dflt;
    if (!x->is_integer()) fail(key, "must be an integer (allowed " + range(min, max) + ")");
    const int64_t n = x->as_integer();
    if (n < min || n > max) {
      fail(key, std::to_string(n) + " is out of range (allowed " + range(min, max) + ")");
    }
    return n;
  }

  std::string string(const std::string& key, const std::vector<std::string>& allowed,
                     const std::string& dflt, bool required = false) {
    const toml::value* x = raw(key);
    if (!x) {
      if (required) fail(key, "is required");
      return dflt;
    }
    if (!x->is_string()) fail(key, "must be a string");
    std::string s = x->as_string();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      fail(key, "'" + s + "' is not allowed (allowed: " + join(allowed) + ")");
    }
    return s;
  }

  bool boolean(const std::string& key, bool dflt) {
    const toml::value* x = raw(key);
    if (!x) return dflt;
    if (!x->is_boolean()) fail(key, "must be true or false");
    return x->as_boolean();
  }

  std::vector<std::string> strings(const std::string& key) {
    const toml::value* x = raw(key);
    std::vector<std::string> out;
    if (!x) return out;
    if (!x->is_array()) fail(key, "must be an array of strings");
    for (const auto& e : x->as_array()) {
      if (!e.is_string()) fail(key, "must be an array of strings");
      out.push_back(e.as_string());
    }
    return out;
  }

  Table sub(const std::string& key) {
    const toml::value* x = raw(key);
    if (x && !x->is_table()) fail(key, "must be a table");
    return Table(x, file_, prefix_ + key + ".");
  }

  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    if (v_ && v_->is_table()) {
      for (const auto& [name, _] : v_->as_table()) k.push_back(name);
    }
    return k;
  }

  // Any key present that was never read is a typo or an unsupported option.
  void reject_unknown(const std::vector<std::string>& known_hint) const {
    for (const auto& k : keys()) {
      if (!seen_.count(k)) fail(k, "unknown key (known: " + join(known_hint) + ")");
    }
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }

 private:
  static std::string range(int64_t a, int64_t b) { return std::to_string(a) + ".." + std::to_string(b); }

  const toml::value* v_;
  std::string file_;
  std::string prefix_;
  std::set<std::string> seen_;
};

std::string first_line(const std::string& s) {
  std::istringstream in(s);
  std::string line, out;
  // toml11 reports "[error] what" then "--> file" and the offending line.
  while (std::getline(in, line)) {
    line.erase(0, line.find_first_not_of(" \t|"));
    if (line.empty()) continue;
    out += (out.empty() ? "" : " ") + line;
    if (out.size() > 160) break;
  }
  return out;
}

std::string substitute(const std::string& text, const std::map<std::string, std::string>& values,
                       const std::string& file) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '{') {
      out += text[i++];
      continue;
    }
    const size_t end = text.find('}', i);
    if (end == std::string::npos) throw ProfileError(file + ": port.devargs: unclosed '{'");
    const std::string name = text.substr(i + 1, end - i - 1);
    auto it = values.find(name);
    if (it == values.end()) {
      throw ProfileError(file + ": port.devargs: placeholder {" + name +
                         "} is not declared under [vars." + name + "]");
    }
    out += it->second;
    i = end + 1;
  }
  return out;
}

}  // namespace

namespace {
const std::vector<std::string> kVdevPmds = {"net_af_packet", "net_af_xdp", "net_memif", "net_ring"};
const std::vector<std::string> kPciPmds = {"mlx5_pci", "net_ice"};

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

bool looks_like_pci(const std::string& a) {
  // dddd:bb:dd.f
  if (a.size() != 12 || a[4] != ':' || a[7] != ':' || a[10] != '.') return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (i == 4 || i == 7 || i == 10) continue;
    if (!std::isxdigit(static_cast<unsigned char>(a[i]))) return false;
  }
  return true;
}
}  // namespace

std::string vdev_name(const NicProfile& p) { return p.is_pci() ? p.port.device : p.port.pmd + "0"; }

NicProfile load_profile(const std::filesystem::path& path,
                        const std::map<std::string, std::string>& vars,
                        const std::map<std::string, std::string>& builtins) {
  const std::string file = path.string();
  if (!std::filesystem::exists(path)) throw ProfileError(file + ": no such profile file");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) throw ProfileError(file + ": cannot read the profile file");
  return parse_profile(text.str(), path, vars, builtins);
}

size_t first_invalid_utf8(std::string_view text) {
  const auto* b = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = b[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((b[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

void require_utf8(std::string_view text) {
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    throw std::invalid_argument("not UTF-8 at byte " + std::to_string(bad));
  }
}

NicProfile parse_profile(std::string_view text, const std::filesystem::path& path,
                         const std::map<std::string, std::string>& vars,
                         const std::map<std::string, std::string>& builtins) {
  const std::string file = path.string();
  toml::value root;
  try {
    require_utf8(text);
    std::istringstream in{std::string(text)};
    root = toml::parse(in, file);
  } catch (const std::exception& e) {
    throw ProfileError(file + ": malformed TOML: " + first_line(e.what()));
  }
  NicProfile p;
  p.file = path;
  Table top(&root, file, "");

  Table prof = top.sub("profile");
  p.name = prof.string("name", {}, "", true);
  p.description = prof.string("description", {}, "");
  p.line_rate_gbps = uint32_t(prof.integer("line_rate_gbps", 0, 1600, 0));
  prof.reject_unknown({"name", "description", "line_rate_gbps"});

  // [vars.NAME]: placeholders of the devargs, with defaults and allowed values.
  std::map<std::string, std::string> values = builtins;
  Table vt = top.sub("vars");
  for (const auto& name : vt.keys()) {
    Table v = vt.sub(name);
    const auto allowed = v.strings("allowed");
    v.string("description", {}, "");
    const bool has_default = v.has("default");
    const std::string dflt = v.string("default", allowed, "");
    v.reject_unknown({"default", "allowed", "description"});
    auto given = vars.find(name);
    if (given != vars.end()) {
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), given->second) == allowed.end()) {
        throw ProfileError(file + ": vars." + name + ": '" + given->second +
                           "' is not allowed (allowed: " + Table::join(allowed) + ")");
      }
      if (given->second.find_first_of(",{}") != std::string::npos) {
        throw ProfileError(file + ": vars." + name + ": '" + given->second +
                           "' must not contain ',', '{' or '}'");
      }
      values[name] = given->second;
    } else if (has_default) {
      values[name] = dflt;
    } else {
      throw ProfileError(file + ": vars." + name + ": no value given and no default (pass --set " +
                         name + "=...)");
    }
  }
  for (const auto& [name, value] : vars) {
    if (!values.count(name) || (builtins.count(name) && !vt.has(name))) {
      throw ProfileError(file + ": vars." + name + ": the profile declares no such variable (declared: " +
                         Table::join(vt.keys()) + ")");
    }
  }

  Table port = top.sub("port");
  std::vector<std::string> pmds = kVdevPmds;
  pmds.insert(pmds.end(), kPciPmds.begin(), kPciPmds.end());
  p.port.pmd = port.string("pmd", pmds, "", true);
  p.port.device = substitute(port.string("device", {}, ""), values, file);
  p.port.devargs = substitute(port.string("devargs", {}, ""), values, file);
  if (contains(kPciPmds, p.port.pmd) && !looks_like_pci(p.port.device)) {
    port.fail("device", "'" + p.port.device + "' is not a PCI address (dddd:bb:dd.f), which " +
                            p.port.pmd + " needs");
  }
  if (contains(kVdevPmds, p.port.pmd) && !p.port.device.empty()) {
    port.fail("device", p.port.pmd + " is a virtual device and takes no PCI address");
  }
  p.port.mtu = uint32_t(port.integer("mtu", 576, 9600, 9000));
  p.port.rx_queues = uint16_t(port.integer("rx_queues", 1, 64, 1));
  p.port.tx_queues = uint16_t(port.integer("tx_queues", 1, 64, 1));
  p.port.rx_desc = uint16_t(port.integer("rx_desc", 64, 16384, 1024));
  p.port.tx_desc = uint16_t(port.integer("tx_desc", 64, 16384, 1024));
  p.port.mbuf_data_room = uint32_t(port.integer("mbuf_data_room", 1024, 65535 - 128, 10240));
  p.port.mbufs = uint32_t(port.integer("mbufs", 1024, 1 << 20, 16383));
  p.port.promiscuous = port.boolean("promiscuous", true);
  p.port.set_mtu = port.boolean("set_mtu", true);
  port.reject_unknown({"pmd", "devargs", "mtu", "rx_queues", "tx_queues", "rx_desc", "tx_desc",
                       "mbuf_data_room", "mbufs", "promiscuous", "set_mtu", "device"});
  if (p.port.mbuf_data_room < p.port.mtu + 18) {
    port.fail("mbuf_data_room", std::to_string(p.port.mbuf_data_room) +
                                    " cannot hold a frame of mtu " + std::to_string(p.port.mtu) +
                                    " + 18 bytes of Ethernet header");
  }

  Table off = top.sub("offload");
  p.offload.compressdev =
      off.string("compressdev", {"none", "compress_isal", "compress_qat", "mlx5_pci"}, "none");
  p.offload.compress_device = substitute(off.string("compress_device", {}, ""), values, file);
  p.offload.udp_checksum = off.boolean("udp_checksum", false);
  off.reject_unknown({"compressdev", "compress_device", "udp_checksum"});
  const bool hw_compress = p.offload.compressdev == "compress_qat" || p.offload.compressdev == "mlx5_pci";
  if (hw_compress && !looks_like_pci(p.offload.compress_device)) {
    off.fail("compress_device", "'" + p.offload.compress_device + "' is not a PCI address, which " +
                                    p.offload.compressdev + " needs");
  }
  if (!hw_compress && !p.offload.compress_device.empty()) {
    off.fail("compress_device", "only hardware engines (compress_qat, mlx5_pci) take a device");
  }

  Table eal = top.sub("eal");
  p.eal.args = eal.strings("args");
  p.eal.lcores = eal.string("lcores", {}, "");
  eal.reject_unknown({"args", "lcores"});
  for (const auto& a : p.eal.args) {
    if (a.rfind("--vdev", 0) == 0 || a.rfind("--file-prefix", 0) == 0 || a.rfind("--lcores", 0) == 0 ||
        a == "-a" || a.rfind("--allow", 0) == 0) {
      eal.fail("args", "'" + a + "' is set by memmotiond itself (use port.* / offload.* / eal.lcores)");
    }
    if (a == "--no-pci" && (p.is_pci() || !p.offload.compress_device.empty())) {
      eal.fail("args", "--no-pci contradicts the PCI device " + p.port.device);
    }
  }

  Table eng = top.sub("engine");
  p.engine.workers = uint32_t(eng.integer("workers", 1, 64, 1));
  if (p.engine.workers != p.port.rx_queues || p.engine.workers != p.port.tx_queues) {
    eng.fail("workers", std::to_string(p.engine.workers) + " must equal port.rx_queues and " +
                            "port.tx_queues (one queue pair per worker)");
  }
  p.engine.idle = eng.string("idle", {"backoff", "spin"}, "backoff");
  p.engine.backoff_max_us = uint32_t(eng.integer("backoff_max_us", 1, 100000, 1000));
  eng.reject_unknown({"workers", "idle", "backoff_max_us"});

  Table tr = top.sub("transport");
  const int64_t window = tr.integer("window", 16, 16384, 1024);
  if (window & (window - 1)) tr.fail("window", std::to_string(window) + " is not a power of two");
  p.transport.window = uint32_t(window);
  p.transport.ack_every = uint32_t(tr.integer("ack_every", 1, 256, 16));
  p.transport.rto_min_us = uint32_t(tr.integer("rto_min_us", 50, 1000000, 1000));
  p.transport.rto_max_us = uint32_t(tr.integer("rto_max_us", 1000, 10000000, 100000));
  p.transport.dead_timeout_ms = uint32_t(tr.integer("dead_timeout_ms", 100, 600000, 5000));
  tr.reject_unknown({"window", "ack_every", "rto_min_us", "rto_max_us", "dead_timeout_ms"});
  if (p.transport.rto_max_us < p.transport.rto_min_us) {
    tr.fail("rto_max_us", "must not be below rto_min_us");
  }

  Table fab = top.sub("fabric");
  p.fabric.udp_base_port = uint16_t(fab.integer("udp_base_port", 1, 65535 - 64, 7470));
  fab.reject_unknown({"udp_base_port"});

  top.reject_unknown({"profile", "vars", "port", "eal", "engine", "transport", "fabric", "offload"});
  return p;
}

std::vector<std::string> eal_arguments(const NicProfile& p, const std::string& file_prefix) {
  std::vector<std::string> a = {"memmotiond", "--file-prefix=" + file_prefix};
  bool no_pci = false, log_level = false;
  for (const auto& x : p.eal.args) {
    a.push_back(x);
    no_pci |= x == "--no-pci";
    log_level |= x.rfind("--log-level", 0) == 0;
  }
  if (!log_level) a.push_back("--log-level=notice");
  if (!p.eal.lcores.empty()) a.push_back("--lcores=" + p.eal.lcores);
  const std::string args = p.port.devargs.empty() ? "" : "," + p.port.devargs;
  const bool any_pci = p.is_pci() || !p.offload.compress_device.empty();
  if (any_pci) {
    // Only the devices the profile names are probed (-a allow-list).
    if (p.is_pci()) a.push_back("-a" + p.port.device + args);
    if (!p.offload.compress_device.empty()) a.push_back("-a" + p.offload.compress_device);
  } else if (!no_pci) {
    a.push_back("--no-pci");  // virtual devices only: never probe the host's PCI bus
  }
  if (!p.is_pci()) a.push_back("--vdev=" + vdev_name(p) + args);
  if (p.offload.compressdev == "compress_isal") a.push_back("--vdev=compress_isal0");
  return a;
}

}  // namespace mm::port
