// memmotionctl: the command-line client of memmotiond's control socket.
// Exit codes scripts can trust: 0 ok, 1 the daemon answered with an error,
// 2 usage, 3 cannot reach the daemon, 4 timed out, 5 the session ended
// failed or cancelled, 6 libvirt refused (connection, domain, start).
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "LibvirtMigration.hpp"

using nlohmann::json;

namespace {

enum Exit { kOk = 0, kErrorReply = 1, kUsage = 2, kUnreachable = 3, kTimeout = 4, kSessionFailed = 5, kLibvirt = 6 };

struct Failure {
  int code;
  std::string text;
};

class Client {
 public:
  Client(const std::string& path, double timeout_s) : timeout_ms_(int(timeout_s * 1000)) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) throw Failure{kUsage, "socket path too long: " + path};
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      throw Failure{kUnreachable, "cannot connect to " + path + ": " + strerror(errno) +
                                      " (is memmotiond running?)"};
    }
    json greeting = read_message();
    if (!greeting.contains("QMP")) throw Failure{kUnreachable, path + " did not greet like memmotiond"};
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Sends one request line and returns the reply, skipping events.
  json call(const std::string& line) {
    const std::string s = line + "\n";
    if (::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) != ssize_t(s.size())) {
      throw Failure{kUnreachable, "lost the connection to the daemon"};
    }
    for (;;) {
      json m = read_message();
      if (!m.contains("event")) return m;
    }
  }
  json execute(const std::string& cmd, const json& args = json::object()) {
    return call(json{{"execute", cmd}, {"arguments", args}}.dump());
  }

 private:
  json read_message() {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        try {
          return json::parse(line);
        } catch (const json::exception&) {
          throw Failure{kUnreachable, "the daemon sent malformed JSON: " + line.substr(0, 200)};
        }
      }
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, timeout_ms_);
      // A signal (Ctrl-C under `migrate --libvirt`) interrupts the wait: wait
      // again rather than fall into a blocking recv with nothing to read.
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Failure{kUnreachable, std::string("poll on the control socket: ") + strerror(errno)};
      if (r == 0) throw Failure{kTimeout, "no answer from the daemon within the timeout"};
      char tmp[65536];
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) throw Failure{kUnreachable, "the daemon closed the connection"};
      buf_.append(tmp, size_t(n));
    }
  }

  int fd_ = -1;
  int timeout_ms_;
  std::string buf_;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char s[32];
  std::snprintf(s, sizeof s, "%.1f %s", b, units[u]);
  return s;
}

// One progress line: bar, bytes, rate, dirty rate, savings, ETA, state.
std::string progress_line(const json& s) {
  const json pr = s.value("progress", json::object());
  const json& c = s["counters"];
  const double sent = pr.value("transferred", 0.0), left = pr.value("remaining", 0.0);
  const double frac = sent + left > 0 ? sent / (sent + left) : 0;
  const double mbps = pr.value("mbps", 0.0);
  // Savings: wire bytes against the bytes read from QEMU so far (what is
  // read but not yet sent, at most a window per stream, counts as unsaved).
  const double in = c.value("qemu_bytes_in", 0.0);
  const double wire = c.value("wire_bytes_tx", 0.0);
  const int width = 24, filled = int(frac * width + 0.5);
  char buf[256];
  const double eta = mbps > 0 ? left * 8 / (mbps * 1e6) : -1;
  std::snprintf(buf, sizeof buf, "[%s%s] %3.0f%%  %s sent  %s/s  dirty %s/s  saved %.0f%%  ETA %s  %s",
                std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '-').c_str(),
                frac * 100, human_bytes(sent).c_str(), human_bytes(mbps * 1e6 / 8).c_str(),
                human_bytes(pr.value("dirty-rate", 0.0)).c_str(),
                in > 0 ? std::max(0.0, (1 - wire / in) * 100) : 0.0,
                eta >= 0 ? (std::to_string(int(eta * 10) / 10.0).substr(0, 4) + "s").c_str() : "?",
                s.value("state", "?").c_str());
  return buf;
}

void print_session(const json& s) {
  const auto& c = s["counters"];
  std::cout << "session " << s["session"] << " (" << s["role"].get<std::string>() << ") "
            << s["state"].get<std::string>() << ": from QEMU "
            << human_bytes(c["qemu_bytes_in"].get<double>()) << ", to QEMU "
            << human_bytes(c["qemu_bytes_out"].get<double>()) << ", wire tx "
            << human_bytes(c["wire_bytes_tx"].get<double>()) << ", wire rx "
            << human_bytes(c["wire_bytes_rx"].get<double>()) << ", retransmits "
            << c["retransmits"];
  if (!s["duration-ms"].is_null()) std::cout << ", " << s["duration-ms"].get<double>() << " ms";
  std::cout << "\n";
  if (c.value("pages_in", 0) > 0) {
    const bool src = s.value("role", "") == "source";
    std::cout << "  pages: " << c["pages_in"] << " in " << c["multifd_packets"] << " multifd packets; zero "
              << c["pages_zero"] << ", unchanged " << c["pages_unchanged"]
              << (!src && c.value("pages_unchanged", 0) > 0 ? " (each checked against what was delivered)" : "")
              << ", dedupe " << c["pages_dedupe_hits"]
              << ", compressed " << c["pages_compressed"] << " ("
              << human_bytes(c["pages_compressed_bytes"].get<double>()) << "), raw " << c["pages_raw"];
    if (c.value("pages_unchanged_refused", 0) > 0) std::cout << ", unchanged refused " << c["pages_unchanged_refused"];
    if (c.value("pages_delta", 0) > 0 || c.value("pages_delta_bases", 0) > 0) {
      std::cout << ", delta " << c["pages_delta"] << " (" << human_bytes(c["pages_delta_bytes"].get<double>()) << ")";
      if (src) std::cout << " of " << c["pages_delta_bases"] << " with a base";
    }
    if (src) {
      std::cout << "; records " << human_bytes(c["page_record_bytes"].get<double>()) << " for "
                << human_bytes(c["pages_in"].get<double>() * 4096);
    } else {
      std::cout << "; written " << c["pages_written"] << ", verified " << c["pages_verified"];
    }
    std::cout << "\n";
  }
  if (s.contains("pages")) {
    const json& p = s["pages"];
    std::cout << "  policy: codec " << p.value("codec", "?") << ", zero " << p.value("zero", false)
              << ", unchanged " << p.value("unchanged", false) << ", dedupe " << p.value("dedupe", false)
              << ", delta " << p.value("delta", false);
    if (p.contains("unchanged-note")) std::cout << " (unchanged filter " << p["unchanged-note"].get<std::string>() << ")";
    std::cout << "\n";
  }
  if (s.contains("postcopy-decision")) std::cout << "  postcopy: " << s["postcopy-decision"].get<std::string>() << "\n";
  if (s.contains("faults")) {
    const json& f = s["faults"];
    std::cout << "  postcopy faults: " << f["requests"] << " requests, " << f["timed"]
              << " timed from request to page (preempt channel): p50 " << f["p50-us"].get<double>() << " us, p99 "
              << f["p99-us"].get<double>() << " us, max " << f["max-us"].get<double>() << " us; answered elsewhere "
              << f["unmatched"];
    if (f.contains("note")) std::cout << " (" << f["note"].get<std::string>() << ")";
    std::cout << "\n";
  }
  if (s.contains("error")) std::cout << "  error: " << s["error"].get<std::string>() << "\n";
}

volatile sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

bool terminal(const std::string& st) { return st == "completed" || st == "failed" || st == "cancelled"; }

struct LibvirtCli {
  std::string domain, connect, dest_uri, socket_dir = "/run/memmotion";
  mm::control::LibvirtRequest req;
};

// `migrate --libvirt`: the daemons negotiate the session (the source daemon
// listens at the path libvirt gives the source QEMU; the destination daemon
// connects to the same path on its host, where libvirt has the destination
// QEMU listen), then libvirt migrates the domain peer-to-peer and this loop
// shows libvirt's job progress next to the daemon's counters until the end.
// SIGINT/SIGTERM or the timeout abort the libvirt job; the domain stays on
// the source.
int migrate_with_libvirt(Client& c, json args, LibvirtCli& lv, double timeout, bool show, bool as_json) {
  const uint32_t session = args["session"];
  lv.req.socket_path = lv.socket_dir + "/libvirt-" + lv.domain + "-" + std::to_string(session) + ".sock";
  mm::control::LibvirtPlan plan;
  try {
    plan = mm::control::LibvirtPlan::from(lv.req);
  } catch (const std::invalid_argument& e) {
    std::cerr << "memmotionctl: " << e.what() << "\n";
    return kUsage;
  }
  std::unique_ptr<mm::control::LibvirtMigration> job;
  try {
    job = std::make_unique<mm::control::LibvirtMigration>(lv.connect, lv.domain);
  } catch (const mm::control::LibvirtError& e) {
    std::cerr << "memmotionctl: " << e.what() << "\n";
    return kLibvirt;
  }
  args["listen"] = "unix:" + lv.req.socket_path;
  args["dst-incoming"] = "unix:" + lv.req.socket_path;
  // For the record in the offer: libvirt, not the daemons, sets QEMU up.
  if (plan.parallel_connections > 0) args["multifd-channels"] = plan.parallel_connections;
  json reply = c.execute("migrate", args);
  if (reply.contains("error")) {
    std::cerr << "memmotionctl: " << reply["error"]["class"].get<std::string>() << ": "
              << reply["error"]["desc"].get<std::string>() << "\n";
    return kErrorReply;
  }
  try {
    job->start(lv.dest_uri, plan);
  } catch (const mm::control::LibvirtError& e) {
    c.execute("session-cancel", {{"session", session}});
    std::cerr << "memmotionctl: " << e.what() << "\n";
    return kLibvirt;
  }
  // Ctrl-C and SIGTERM abort the job, even where the parent left them
  // blocked or ignored (a test runner may).
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  sigset_t unblock;
  ::sigemptyset(&unblock);
  ::sigaddset(&unblock, SIGINT);
  ::sigaddset(&unblock, SIGTERM);
  ::pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(timeout);
  auto last_line = t0 - std::chrono::seconds(2);
  const bool tty = ::isatty(2);
  bool aborted = false, downtime_set = plan.downtime_ms == 0, postcopy_started = false;
  std::optional<std::chrono::steady_clock::time_point> session_ended;
  bool stuck_checked = false;
  constexpr std::chrono::seconds kStuckJob{20};
  std::string why;
  json s, progress = json::object();
  // The daemon may die under a running libvirt job: then the job is what
  // remains to end, so a lost control connection ends the loop, not the program.
  bool daemon_lost = false;
  auto query = [&]() -> json {
    if (daemon_lost) return json::object();
    try {
      return c.execute("query-session", {{"session", session}});
    } catch (const Failure& f) {
      daemon_lost = true;
      return {{"return", {{"session", session}, {"state", "failed"}, {"error", "source daemon: " + f.text}}}};
    }
  };
  auto cancel_session = [&] {
    if (daemon_lost) return;
    try {
      c.execute("session-cancel", {{"session", session}});
    } catch (const Failure&) {
      daemon_lost = true;
    }
  };
  auto abort_job = [&](const std::string& reason) {
    if (aborted) return;
    aborted = true;
    why = reason;
    try {
      job->abort();
    } catch (const mm::control::LibvirtError& e) {
      why += " (" + std::string(e.what()) + ")";
    }
    cancel_session();
  };
  while (job->running()) {
    json lj = job->stats();
    const json q = query();
    if (q.contains("return")) s = q["return"];
    const std::string st = s.value("state", "?");
    // Job settings libvirt takes only while the job runs.
    if (!downtime_set && lj.value("job-type", 0) == VIR_DOMAIN_JOB_UNBOUNDED) {
      try {
        job->set_max_downtime(plan.downtime_ms);
      } catch (const mm::control::LibvirtError& e) {
        std::cerr << "memmotionctl: " << e.what() << "\n";
      }
      downtime_set = true;
    }
    // Postcopy by policy: counted from the start of the command; libvirt
    // takes the switch only once QEMU is migrating.
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (plan.postcopy_after_s > 0 && !postcopy_started && elapsed >= plan.postcopy_after_s &&
        lj.value("transferred", 0ull) > 0) {
      try {
        job->start_postcopy();
        std::cerr << "memmotionctl: precopy did not converge in " << plan.postcopy_after_s
                  << " s, switched to postcopy\n";
      } catch (const mm::control::LibvirtError& e) {
        std::cerr << "memmotionctl: " << e.what() << "\n";
      }
      postcopy_started = true;
    }
    if (g_interrupted) abort_job("interrupted: aborted the libvirt job");
    if (st == "failed" || st == "cancelled") {
      abort_job("the daemon's session " + st + (s.contains("error") ? ": " + s["error"].get<std::string>() : ""));
      if (!session_ended) session_ended = std::chrono::steady_clock::now();
    }
    // libvirt ends a failed job within seconds, unless the destination
    // QEMU is stuck at a multifd sync point (its daemon died): then only
    // that paused incoming copy holds the job.
    if (session_ended && !stuck_checked && std::chrono::steady_clock::now() - *session_ended > kStuckJob) {
      stuck_checked = true;
      std::cerr << "memmotionctl: libvirt has not ended the job " << kStuckJob.count()
                << " s after the session ended: " << job->end_stuck_incoming(lv.dest_uri) << "\n";
    }
    if (std::chrono::steady_clock::now() > deadline) abort_job("timed out after " + std::to_string(int(timeout)) + " s");
    if (show && !as_json && !s.is_null()) {
      json view = s;
      if (lj.value("job-type", 0) != VIR_DOMAIN_JOB_NONE) progress = lj;  // the job's last figures stay shown
      view["progress"] = progress;
      const auto now = std::chrono::steady_clock::now();
      if (tty) {
        std::cerr << "\r" << progress_line(view) << "\033[K" << std::flush;
      } else if (now - last_line >= std::chrono::seconds(1)) {
        std::cerr << progress_line(view) << "\n";
        last_line = now;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (tty && show && !as_json) std::cerr << "\n";
  const std::string error = job->wait();
  // The daemons finish a moment after QEMU: the destination confirms last.
  for (int i = 0; i < 100 && !daemon_lost; ++i) {
    const json q = query();
    if (!q.contains("return")) break;
    s = q["return"];
    if (terminal(s.value("state", ""))) break;
    if (!error.empty() && i == 20) cancel_session();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (error.empty() && s.value("state", "") == "completed") {
    json done = job->stats(true);
    s["libvirt"] = done;
    if (as_json) {
      std::cout << s.dump() << "\n";
    } else {
      std::cout << "libvirt: " << lv.domain << " migrated in " << done.value("total-time-ms", 0) << " ms, downtime "
                << done.value("downtime-ms", 0) << " ms, " << human_bytes(done.value("transferred", 0.0))
                << " from QEMU\n";
      print_session(s);
    }
    return kOk;
  }
  if (as_json) {
    s["libvirt-error"] = error;
    std::cout << s.dump() << "\n";
  } else if (!s.is_null()) {
    print_session(s);
  }
  std::cerr << "memmotionctl: the migration of " << lv.domain << " did not complete"
            << (why.empty() ? "" : ": " + why) << (error.empty() ? "" : "; libvirt: " + error)
            << "; the domain is " << job->state() << " on the source\n";
  return kSessionFailed;
}

}  // namespace

// `memmotionctl store`: the budget, then one line per image, newest first.
void print_store(const json& r) {
  auto mib = [](uint64_t b) { return std::to_string((b + (1 << 19)) >> 20) + " MiB"; };
  std::cout << "page store (" << r.value("backing", "") << "): " << mib(r.value("used", uint64_t(0))) << " of "
            << mib(r.value("budget", uint64_t(0))) << " used, " << r.value("images-made", uint64_t(0))
            << " image(s) made, " << r.value("evictions", uint64_t(0)) << " evicted, "
            << r.value("captures-dropped", uint64_t(0)) << " capture(s) dropped";
  const std::string why = r.value("last-dropped", "");
  if (!why.empty()) std::cout << " (last: " << why << ")";
  std::cout << "\n";
  if (!r.contains("images") || r["images"].empty()) {
    std::cout << "no images\n";
    return;
  }
  for (const auto& i : r["images"]) {
    std::cout << "  " << i.value("vm", "") << "  generation " << i.value("generation", "") << ", "
              << i.value("pages-held", uint64_t(0)) << " of " << i.value("pages", uint64_t(0)) << " pages held, "
              << mib(i.value("bytes", uint64_t(0))) << "\n";
  }
}

int main(int argc, char** argv) {
  CLI::App app{"memmotionctl: drive memmotiond over its control socket"};
  std::string socket_path = "/run/memmotion/control.sock";
  bool as_json = false;
  double timeout = 10;
  app.add_option("-s,--socket", socket_path, "control socket of the daemon")->capture_default_str();
  app.add_flag("--json", as_json, "print the daemon's JSON reply");
  app.add_option("--timeout", timeout, "seconds to wait for an answer (wait: for the end)")
      ->capture_default_str();
  app.require_subcommand(1);

  uint32_t session = 0;
  std::string uri, peer_ip, peer_mac, raw;
  uint16_t peer_port = 0;
  uint64_t max_bw = 0;
  auto* prepare = app.add_subcommand("prepare", "destination: prepare an incoming session");
  prepare->add_option("--session", session, "session id")->required();
  prepare->add_option("--qemu-uri", uri, "destination QEMU's -incoming URI (unix:/path)")->required();
  prepare->add_option("--peer-udp-port", peer_port, "source daemon's fabric UDP base port");
  prepare->add_option("--max-bandwidth", max_bw, "pace the return path to this many wire bytes/s");
  auto* start = app.add_subcommand("start", "source: start an outgoing session");
  start->add_option("--session", session, "session id")->required();
  start->add_option("--listen", uri, "URI the source QEMU migrates to (unix:/path)")->required();
  start->add_option("--peer-ip", peer_ip, "destination daemon's fabric IPv4")->required();
  start->add_option("--peer-mac", peer_mac, "destination daemon's fabric MAC (default broadcast)");
  start->add_option("--peer-udp-port", peer_port, "destination daemon's fabric UDP base port");
  start->add_option("--max-bandwidth", max_bw, "pace the session to this many wire bytes/s");
  bool preempt = false;
  for (CLI::App* sub : {start, prepare}) {
    sub->add_flag("--postcopy-preempt", preempt,
                  "both QEMUs have the postcopy-preempt capability: relay its channel on the priority stream");
  }
  std::string codec;
  bool no_zero = false, unchanged = false, no_unchanged = false, no_dedupe = false, no_delta = false;
  auto* status = app.add_subcommand("status", "show one session");
  status->add_option("--session", session, "session id")->required();
  auto* wait = app.add_subcommand("wait", "wait until a session ends (exit 0 only if completed)");
  wait->add_option("--session", session, "session id")->required();
  auto* cancel = app.add_subcommand("cancel", "cancel a session");
  cancel->add_option("--session", session, "session id")->required();
  auto* sessions = app.add_subcommand("sessions", "list sessions");
  auto* stats = app.add_subcommand("stats", "port and engine counters");
  auto* version = app.add_subcommand("version", "daemon version");
  auto* quit = app.add_subcommand("quit", "stop the daemon");
  std::string vm;
  auto* store = app.add_subcommand("store", "list the VM images the daemon's page store holds");
  auto* forget = app.add_subcommand("forget", "drop a VM's image from the daemon's page store");
  forget->add_option("--vm", vm, "the VM's identity (as given to migrate --vm, or its QEMU UUID)")->required();
  auto* migrate = app.add_subcommand("migrate", "migrate a VM: negotiate with the peer daemon, drive QEMU, show progress");
  std::string peer, src_qmp, dst_qmp, dst_incoming, listen;
  uint64_t downtime_ms = 0;
  double postcopy_after = 0;
  double switchover_after = -1;
  bool no_preempt = false;
  int multifd_channels = -1;
  bool no_progress = false;
  std::string encrypt;
  migrate->add_option("--session", session, "session id")->required();
  migrate->add_option("--peer", peer, "destination daemon's peer channel, ip:port")->required();
  migrate->add_option("--src-qmp", src_qmp, "QMP socket of the source QEMU (without it: only hand out the URI)");
  migrate->add_option("--dst-qmp", dst_qmp, "QMP socket of the destination QEMU, as the destination host sees it "
                                            "(QEMU started with -incoming defer)");
  migrate->add_option("--dst-incoming", dst_incoming, "the destination QEMU's -incoming URI, when not --dst-qmp");
  migrate->add_option("--listen", listen, "URI the source QEMU migrates to (default: in the daemon's run dir)");
  migrate->add_option("--max-bandwidth", max_bw, "pace the session to this many wire bytes/s");
  migrate->add_option("--downtime-limit", downtime_ms, "QEMU downtime limit, ms (default 300)");
  migrate->add_option("--postcopy-after", postcopy_after, "switch to postcopy when precopy has not converged after this many s");
  migrate->add_option("--switchover-after", switchover_after,
                      "postcopy policy: switch to postcopy after this many s at the latest (0: postcopy-first, at "
                      "once), earlier when the convergence watchdog sees the guest dirty memory faster than the "
                      "link carries it")
      ->check(CLI::Range(0.0, 86400.0))
      ->excludes("--postcopy-after");
  migrate->add_flag("--no-preempt", no_preempt,
                    "postcopy without QEMU's postcopy-preempt channel (by default the pages the destination asks "
                    "for travel on a priority stream of their own)");
  migrate->add_option("--multifd-channels", multifd_channels, "QEMU multifd channels (default: the daemon's queues; 0: off)");
  migrate->add_flag("--no-progress", no_progress, "no progress display");
  migrate->add_option("--encrypt", encrypt, "AES-256-GCM on the fabric for this migration: required or off "
                                            "(default: the daemon's --encrypt); the destination must agree")
      ->check(CLI::IsMember({"required", "off"}));
  LibvirtCli lv;
  bool copy_storage_inc = false;
  migrate->add_option("--libvirt", lv.domain, "migrate this libvirt domain: libvirt drives both QEMUs, peer-to-peer")
      ->excludes("--src-qmp")->excludes("--dst-qmp")->excludes("--dst-incoming")->excludes("--listen")
      ->excludes("--multifd-channels");
  migrate->add_option("--connect", lv.connect, "libvirt URI of the source host (default: libvirt's, qemu:///system as root)");
  migrate->add_option("--dest-uri", lv.dest_uri, "libvirt URI of the destination host, as the source libvirtd reaches it")
      ->needs("--libvirt");
  migrate->add_option("--parallel-connections", lv.req.parallel_connections,
                      "libvirt --parallel connections (QEMU multifd channels; 0: one stream)")
      ->capture_default_str()->needs("--libvirt");
  migrate->add_option("--socket-dir", lv.socket_dir, "where the migration socket lives on both hosts")
      ->capture_default_str()->needs("--libvirt");
  migrate->add_flag("--persistent", lv.req.persist_dest, "define the domain on the destination")->needs("--libvirt");
  migrate->add_flag("--undefinesource", lv.req.undefine_source, "undefine the domain here afterwards")->needs("--libvirt");
  migrate->add_flag("--suspend", lv.req.suspend, "leave the domain paused on the destination")->needs("--libvirt");
  migrate->add_flag("--tunnelled", lv.req.tunnelled, "refused: the stream would bypass the daemons")->needs("--libvirt");
  migrate->add_flag("--copy-storage-all", lv.req.copy_storage, "refused: disks go over libvirt's own NBD connections")
      ->needs("--libvirt");
  migrate->add_flag("--copy-storage-inc", copy_storage_inc, "refused, as --copy-storage-all")->needs("--libvirt");
  // prepare takes the source's policy too: a destination set up directly
  // checks PAGE_SAME records unless told the source's filter is off.
  prepare->add_flag("--unchanged", unchanged,
                    "the source's unchanged filter is on: check its PAGE_SAME records (the default)");
  prepare->add_flag("--no-unchanged", no_unchanged,
                    "the source's unchanged filter is off: refuse PAGE_SAME records, and let the session's "
                    "streams spread over this daemon's workers");
  for (CLI::App* sub : {start, migrate}) {
    sub->add_option("--vm", vm, "the VM's identity for the page store (default for migrate --src-qmp: QEMU's UUID)");
    sub->add_option("--codec", codec, "page codec: auto (default: LZ4 where the CPU is the limit, zstd where the link is), lz4, zstd, deflate (compressdev), none")
        ->check(CLI::IsMember({"lz4", "zstd", "deflate", "none"}));
    sub->add_flag("--no-zero", no_zero, "send zero pages like any other");
    sub->add_flag("--unchanged", unchanged,
                  "do not resend pages whose bytes did not change (PAGE_SAME with the page's hash, which the "
                  "destination checks; the default: with it a session keeps its streams on one worker)");
    sub->add_flag("--no-unchanged", no_unchanged,
                  "resend pages whose bytes did not change, and let the session's streams spread over the "
                  "daemons' workers");
    sub->add_flag("--no-dedupe", no_dedupe, "no dedupe dictionary");
    sub->add_flag("--no-delta", no_delta, "no PAGE_DELTA (pages sent again go whole, not as their changes)");
  }
  auto* rawcmd = app.add_subcommand("raw", "send one request line as is and print the reply");
  rawcmd->add_option("request", raw, "a JSON request")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  try {
    Client c(socket_path, timeout);
    json reply;
    json args = json::object();
    if (peer_port) args["peer-udp-port"] = peer_port;
    if (max_bw) args["max-bandwidth"] = max_bw;
    json pages = json::object();
    if (!codec.empty()) pages["codec"] = codec;
    if (no_zero) pages["zero"] = false;
    if (unchanged && no_unchanged) {
      std::cerr << "memmotionctl: --unchanged and --no-unchanged contradict each other\n";
      return kUsage;
    }
    if (unchanged) pages["unchanged"] = true;
    if (no_unchanged) pages["unchanged"] = false;
    if (no_dedupe) pages["dedupe"] = false;
    if (no_delta) pages["delta"] = false;
    if (!pages.empty() && (*start || *migrate || *prepare)) args["pages"] = pages;
    if (preempt && (*start || *prepare)) args["postcopy-preempt"] = true;
    if (*prepare) {
      args["session"] = session;
      args["qemu-uri"] = uri;
      reply = c.execute("session-prepare", args);
    } else if (*start) {
      args["session"] = session;
      args["listen"] = uri;
      args["peer-ip"] = peer_ip;
      if (!vm.empty()) args["vm"] = vm;
      if (!peer_mac.empty()) args["peer-mac"] = peer_mac;
      reply = c.execute("session-start", args);
    } else if (*status) {
      reply = c.execute("query-session", {{"session", session}});
    } else if (*cancel) {
      reply = c.execute("session-cancel", {{"session", session}});
    } else if (*sessions) {
      reply = c.execute("query-sessions");
    } else if (*stats) {
      reply = c.execute("query-stats");
    } else if (*version) {
      reply = c.execute("query-version");
    } else if (*quit) {
      reply = c.execute("quit");
    } else if (*store) {
      reply = c.execute("query-store");
    } else if (*forget) {
      reply = c.execute("store-forget", {{"vm", vm}});
    } else if (*rawcmd) {
      reply = c.call(raw);
    } else if (*migrate && !lv.domain.empty()) {
      if (lv.dest_uri.empty()) {
        std::cerr << "memmotionctl: --libvirt needs --dest-uri (the destination libvirtd's URI)\n";
        return kUsage;
      }
      lv.req.copy_storage |= copy_storage_inc;
      lv.req.downtime_ms = downtime_ms;
      lv.req.postcopy_after_s = postcopy_after;
      args["session"] = session;
      args["peer"] = peer;
      return migrate_with_libvirt(c, args, lv, timeout, !no_progress, as_json);
    } else if (*migrate) {
      args["session"] = session;
      args["peer"] = peer;
      if (!src_qmp.empty()) args["src-qmp"] = src_qmp;
      if (!dst_qmp.empty()) args["dst-qmp"] = dst_qmp;
      if (!dst_incoming.empty()) args["dst-incoming"] = dst_incoming;
      if (!listen.empty()) args["listen"] = listen;
      if (downtime_ms) args["downtime-limit"] = downtime_ms;
      if (postcopy_after > 0) args["postcopy-after"] = postcopy_after;
      if (switchover_after >= 0) args["switchover-after"] = switchover_after;
      if (no_preempt) args["postcopy-preempt"] = false;
      if (multifd_channels >= 0) args["multifd-channels"] = multifd_channels;
      if (!encrypt.empty()) args["encrypt"] = encrypt;
      if (!vm.empty()) args["vm"] = vm;
      reply = c.execute("migrate", args);
      if (!reply.contains("error") && !src_qmp.empty()) {
        // Follow the session to its end, drawing progress on stderr.
        const bool tty = ::isatty(2);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
        auto last_line = std::chrono::steady_clock::now() - std::chrono::seconds(2);
        for (;;) {
          reply = c.execute("query-session", {{"session", session}});
          if (reply.contains("error")) break;
          const json& r = reply["return"];
          const std::string st = r.value("state", "");
          const bool end = st == "completed" || st == "failed" || st == "cancelled";
          if (!no_progress && !as_json) {
            const auto now = std::chrono::steady_clock::now();
            if (tty) {
              std::cerr << "\r" << progress_line(r) << "\033[K" << std::flush;
            } else if (end || now - last_line >= std::chrono::seconds(1)) {
              std::cerr << progress_line(r) << "\n";
              last_line = now;
            }
          }
          if (end) break;
          if (std::chrono::steady_clock::now() > deadline) {
            if (tty) std::cerr << "\n";
            std::cerr << "memmotionctl: session " << session << " still " << st << " after " << timeout << " s\n";
            return kTimeout;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(250));
        }
        if (tty && !no_progress && !as_json) std::cerr << "\n";
      }
    } else if (*wait) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
      for (;;) {
        reply = c.execute("query-session", {{"session", session}});
        if (reply.contains("error")) break;
        const std::string st = reply["return"]["state"];
        if (st == "completed" || st == "failed" || st == "cancelled") break;
        if (std::chrono::steady_clock::now() > deadline) {
          std::cerr << "memmotionctl: session " << session << " still " << st << " after "
                    << timeout << " s\n";
          return kTimeout;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    if (reply.contains("error")) {
      if (as_json) std::cout << reply.dump() << "\n";
      std::cerr << "memmotionctl: " << reply["error"]["class"].get<std::string>() << ": "
                << reply["error"]["desc"].get<std::string>() << "\n";
      return kErrorReply;
    }
    const json& r = reply["return"];
    if (as_json || *rawcmd) {
      std::cout << (*rawcmd ? reply : r).dump() << "\n";
    } else if (*status || *wait || (*migrate && !src_qmp.empty())) {
      print_session(r);
    } else if (*migrate) {
      std::cout << "session " << session << " negotiated; migrate the source QEMU to "
                << r["migrate-uri"].get<std::string>() << "\n";
    } else if (*sessions) {
      for (auto& s : r) print_session(s);
      if (r.empty()) std::cout << "no sessions\n";
    } else if (*start) {
      std::cout << "session " << session << " started; migrate QEMU to " << r["migrate-uri"].get<std::string>() << "\n";
    } else if (*prepare) {
      std::cout << "session " << session << " prepared\n";
    } else if (*store) {
      print_store(r);
    } else if (*forget) {
      std::cout << "forgot VM " << vm << "\n";
    } else if (!r.empty()) {
      std::cout << r.dump(2) << "\n";
    }
    if ((*wait || (*migrate && !src_qmp.empty())) && r["state"] != "completed") return kSessionFailed;
    return kOk;
  } catch (const Failure& f) {
    std::cerr << "memmotionctl: " << f.text << "\n";
    return f.code;
  }
}
