#include "control/ControlServer.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "control/SessionJson.hpp"
#include "dataplane/engine/Session.hpp"
#include "dataplane/qemu/UnixSocket.hpp"

namespace mm::control {

using nlohmann::json;

namespace {

constexpr auto kWorkerTimeout = std::chrono::milliseconds(3000);

json error_reply(const std::string& cls, const std::string& desc) {
  return {{"error", {{"class", cls}, {"desc", desc}}}};
}

int listen_tcp(const std::string& ip_port, const char* what) {
  const auto colon = ip_port.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (colon == std::string::npos || ::inet_pton(AF_INET, ip_port.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    throw std::runtime_error(std::string(what) + " address '" + ip_port + "' is not IPv4:port");
  }
  a.sin_port = htons(uint16_t(std::atoi(ip_port.c_str() + colon + 1)));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error(std::string("cannot listen for ") + what + " on " + ip_port + ": " + strerror(e));
  }
  return fd;
}

}  // namespace

ControlServer::ControlServer(const std::string& path, std::vector<engine::Engine*> engines,
                             DaemonIdentity id)
    : path_(path), engines_(std::move(engines)), id_(std::move(id)) {
  store_ = std::make_unique<store::PageStore>(id_.store);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw std::runtime_error("control socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  // Owner and group only (control/README.md "Control socket"): a directory
  // we create is 0750, the socket 0660, both in the configured group; the
  // socket never exists with wider rights, not even between bind and chmod.
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0750);
    if (id_.control_gid >= 0 && ::chown(dir.c_str(), uid_t(-1), gid_t(id_.control_gid)) != 0) {
      throw std::runtime_error("cannot give " + dir.string() + " to group " + std::to_string(id_.control_gid) +
                               ": " + strerror(errno));
    }
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  const mode_t old_mask = ::umask(0117);
  const bool bound = listen_fd_ >= 0 && ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  const int bind_errno = errno;
  ::umask(old_mask);
  if (!bound || ::listen(listen_fd_, 16) != 0) {
    throw std::runtime_error("cannot listen on control socket " + path + ": " +
                             strerror(bound ? errno : bind_errno));
  }
  if (::chmod(path.c_str(), 0660) != 0 ||
      (id_.control_gid >= 0 && ::chown(path.c_str(), uid_t(-1), gid_t(id_.control_gid)) != 0)) {
    const int e = errno;
    ::unlink(path.c_str());
    throw std::runtime_error("cannot restrict control socket " + path + " to its owner and group " +
                             std::to_string(id_.control_gid) + ": " + strerror(e));
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  for (engine::Engine* e : engines_) {
    ev.data.fd = e->event_fd();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, e->event_fd(), &ev);
  }
  if (!id_.metrics_listen.empty()) {
    metrics_fd_ = listen_tcp(id_.metrics_listen, "metrics");
    ev.data.fd = metrics_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, metrics_fd_, &ev);
  }
  if (!id_.peer_creds.empty()) peer_client_tls_ = std::make_unique<TlsContext>(id_.peer_creds, false);
  if (!id_.peer_listen.empty()) {
    peer_server_ = std::make_unique<PeerServer>(
        id_.peer_listen, id_.peer_creds, id_.caps,
        [this](const json& offer, const Bytes& key) { return accept_offer(offer, key); });
  }
}

ControlServer::~ControlServer() {
  peer_server_.reset();
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
  for (auto& [fd, c] : clients_) ::close(fd);
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

template <class F>
void ControlServer::on_worker(engine::Engine& e, F&& fn) {
  // The task owns copies of what it needs and reports errors through a
  // shared slot, so a worker that answers late touches nothing of ours.
  auto error = std::make_shared<std::optional<CommandError>>();
  auto other = std::make_shared<std::string>();
  const bool ran = e.run_on_worker(
      [fn = std::forward<F>(fn), error, other]() mutable {
        try {
          fn();
        } catch (const CommandError& e) {
          *error = e;
        } catch (const std::exception& e) {
          *other = e.what();
        }
      },
      kWorkerTimeout);
  if (!ran) throw CommandError("GenericError", "the dataplane worker did not answer within 3 s");
  if (*error) throw **error;
  if (!other->empty()) throw CommandError("GenericError", *other);
}

json ControlServer::dispatch(const std::string& cmd, const json& args, std::atomic<bool>& stop) {
  if (cmd == "qmp_capabilities") {
    no_other_args(args, {"enable"});
    return json::object();
  }
  if (cmd == "query-version") {
    no_other_args(args, {});
    return {{"memmotion", MEMMOTION_VERSION}, {"mmp-version", wire::kVersion}, {"name", id_.name}};
  }
  if (cmd == "query-commands") {
    no_other_args(args, {});
    json list = json::array();
    for (const char* c : {"qmp_capabilities", "query-version", "query-commands", "session-prepare",
                          "session-start", "migrate", "query-session", "query-sessions",
                          "session-cancel", "query-stats", "query-store", "store-check", "store-forget", "quit"}) {
      list.push_back({{"name", c}});
    }
    return list;
  }
  if (cmd == "session-prepare" || cmd == "session-start") {
    const bool source = cmd == "session-start";
    engine::SessionParams p =
        session_params_from_args(source, args, id_.udp_base_port, uint16_t(engines_.size()));
    start_capture(p, 0);
    add_session_parts(p);
    json r = {{"session", p.id}, {"state", "prepared"}};
    if (source) r["migrate-uri"] = p.qemu_uri;
    return r;
  }
  if (cmd == "query-session") {
    no_other_args(args, {"session"});
    const uint32_t id = session_arg(args);
    const auto info = session_info(id);
    if (!info) throw CommandError("SessionNotFound", "no session " + std::to_string(id));
    return session_json(*info);
  }
  if (cmd == "query-sessions") {
    no_other_args(args, {});
    json list = json::array();
    for (const auto& s : all_session_infos()) list.push_back(session_json(s));
    return list;
  }
  if (cmd == "session-cancel") {
    no_other_args(args, {"session"});
    const uint32_t id = session_arg(args);
    auto found = std::make_shared<bool>(false);
    engine::Engine& owner = owner_of(id);
    on_worker(owner, [&owner, id, found] { *found = owner.cancel_session(id, "cancelled by the operator"); });
    if (!*found) throw CommandError("SessionNotFound", "no session " + std::to_string(id));
    if (auto m = migrations_.find(id); m != migrations_.end() && m->second.qmp && !m->second.done) {
      // The closed socket already fails QEMU's migration; say it plainly too.
      try {
        m->second.qmp->execute("migrate_cancel");
      } catch (const QmpError&) {
      }
    }
    return json::object();
  }
  if (cmd == "migrate") return migrate(args);
  if (cmd == "query-store") {
    no_other_args(args, {});
    return store_json();
  }
  if (cmd == "store-check") {
    no_other_args(args, {"vm", "file", "block"});
    return store_check(vm_arg(args), string_arg(args, "file"), args.contains("block") ? string_arg(args, "block") : "pc.ram");
  }
  if (cmd == "store-forget") {
    no_other_args(args, {"vm"});
    const std::string vm = vm_arg(args);
    if (!store_->forget(vm)) throw CommandError("InvalidParameter", "the store holds no image of VM '" + vm + "'");
    return {{"forgotten", vm}};
  }
  if (cmd == "query-stats") {
    no_other_args(args, {});
    json workers = json::array();
    for (engine::Engine* e : engines_) workers.push_back(to_json(e->stats()));
    return {{"port", id_.port_stats ? id_.port_stats() : json::object()},
            {"queues", id_.queue_stats ? id_.queue_stats() : json::array()},
            {"peer", {{"auth", id_.peer_creds.empty() ? "none" : id_.peer_creds.describe()},
                      {"auth_failures", peer_server_ ? peer_server_->auth_failures() : 0},
                      {"handshake_failures", peer_server_ ? peer_server_->handshake_failures() : 0},
                      {"timeouts", peer_server_ ? peer_server_->timeouts() : 0},
                      {"busy_refusals", peer_server_ ? peer_server_->busy_refusals() : 0},
                      {"handshakes", peer_server_ ? peer_server_->handshakes_done() : 0},
                      {"sessions_accepted", peer_server_ ? peer_server_->sessions_accepted() : 0},
                      {"offers_failed", offers_failed_},
                      {"offer_auth_failures", offer_auth_failures_},
                      {"encrypt_refusals", encrypt_refusals_.load()}}},
            {"control", stats_.to_json()},
            {"engine", sum_json(workers)},
            {"workers", workers},
            {"port-description", id_.port_description}};
  }
  if (cmd == "quit") {
    no_other_args(args, {});
    stop = true;
    return json::object();
  }
  throw CommandError("CommandNotFound", "the command " + cmd + " has not been found");
}

std::optional<engine::SessionInfo> ControlServer::session_info(uint32_t id) {
  // The home part's snapshot, with the other workers' parts added.
  std::optional<engine::SessionInfo> home;
  std::vector<engine::SessionInfo> others;
  for (engine::Engine* e : engines_) {
    auto out = std::make_shared<std::optional<engine::SessionInfo>>();
    on_worker(*e, [e, id, out] { *out = e->session_info(id); });
    if (!*out) continue;
    if ((*out)->home && !home) {
      home = std::move(*out);
    } else {
      others.push_back(std::move(**out));
    }
  }
  if (home) {
    for (const auto& o : others) home->merge(o);
  }
  return home;
}

std::vector<engine::SessionInfo> ControlServer::all_session_infos() {
  std::map<uint32_t, engine::SessionInfo> homes;
  std::vector<engine::SessionInfo> others;
  for (engine::Engine* e : engines_) {
    auto out = std::make_shared<std::vector<engine::SessionInfo>>();
    on_worker(*e, [e, out] { *out = e->session_infos(); });
    for (auto& s : *out) {
      if (s.home) {
        homes[s.id] = std::move(s);
      } else {
        others.push_back(std::move(s));
      }
    }
  }
  for (const auto& o : others) {
    if (auto it = homes.find(o.id); it != homes.end()) it->second.merge(o);
  }
  std::vector<engine::SessionInfo> list;
  for (auto& [id, s] : homes) list.push_back(std::move(s));
  return list;
}

void ControlServer::add_session_parts(const engine::SessionParams& p) {
  const uint16_t workers = uint16_t(engines_.size());
  auto share = std::make_shared<engine::SessionShare>(p.id, workers, engine::spreads(p));
  std::vector<uint16_t> order{share->home()};
  for (uint16_t s = 0; s < engine::Session::kStreams; ++s) {
    const uint16_t w = share->owner(s);
    if (std::find(order.begin(), order.end(), w) == order.end()) order.push_back(w);
  }
  if (p.capture) p.capture->expect(uint32_t(order.size()));
  for (size_t i = 0; i < order.size(); ++i) {
    engine::Engine* e = engines_[order[i]];
    auto error = std::make_shared<std::string>();
    auto invalid = std::make_shared<bool>(false);
    const bool ran = e->run_on_worker(
        [e, p, share, error, invalid] {
          try {
            e->add_session(p, share);
          } catch (const std::invalid_argument& x) {
            *error = x.what();
            *invalid = true;
          } catch (const std::exception& x) {
            *error = x.what();
          }
        },
        kWorkerTimeout);
    if (ran && error->empty()) continue;
    const std::string why = ran ? *error : "dataplane worker " + std::to_string(order[i]) + " did not answer within 3 s";
    if (i > 0) {
      // The parts already added end with the home part.
      engine::Engine* h = engines_[order[0]];
      h->run_on_worker([h, id = p.id, why] { h->cancel_session(id, "setting up failed: " + why); }, kWorkerTimeout);
    }
    if (p.capture) captures_pending_.erase({p.id, p.role});
    throw CommandError(*invalid ? "InvalidParameter" : "GenericError", why);
  }
}

void ControlServer::start_capture(engine::SessionParams& p, uint64_t ram_bytes) {
  // Both ends log what crossed: the source what it sent, the destination
  // what it wrote to its QEMU.
  if (!store_->enabled() || p.vm.empty()) return;
  // Room for this migration's image, least recently migrated VMs first;
  // the VM's own older image goes when the new one replaces it.
  const uint64_t want = ram_bytes > 0 ? std::min(ram_bytes, store_->budget().limit()) : store_->budget().limit() / 2;
  store_->make_room(want, p.vm);
  const std::string files = store_->config().backing == store::Backing::file
                                ? store_->config().dir + "/session-" + std::to_string(p.id)
                                : std::string();
  p.capture = std::make_shared<store::CaptureBin>(store_->budget(), store_->config().backing, files, p.vm);
  captures_pending_[{p.id, p.role}] = p.capture;
}

void ControlServer::collect_captures() {
  for (auto it = captures_pending_.begin(); it != captures_pending_.end();) {
    if (!it->second->complete()) {
      ++it;
      continue;
    }
    std::string why;
    auto caps = it->second->take(why);
    const std::string vm = it->second->vm();
    it = captures_pending_.erase(it);
    if (!why.empty()) {
      ++store_stats_.captures_dropped;
      store_stats_.last_dropped = "VM '" + vm + "': " + why;
      continue;
    }
    store::Budget& budget = store_->budget();
    // The VM's image this host held so far: pages that crossed as
    // PAGE_STORED (no bytes on the wire) take their bytes from it.
    std::shared_ptr<const store::Image> prior = store_->find(vm);
    merging_.push_back(std::async(std::launch::async, [vm, caps = std::move(caps), &budget, prior]() mutable {
      Merged m{vm, nullptr, {}, 0};
      const uint64_t t0 = engine::now_ns();
      m.img = store::Image::merge(vm, std::move(caps), budget, m.why, prior.get());
      prior.reset();
      if (m.img) {
        engine::CodecSet codecs("");  // LZ4 and zstd; no compressdev off the workers
        m.img->inflate([&](pages::CodecKind k) { return codecs.get(k, nullptr); }, budget);
      }
      m.ms = (engine::now_ns() - t0) / 1'000'000;
      return m;
    }));
  }
  for (auto f = merging_.begin(); f != merging_.end();) {
    if (f->wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ++f;
      continue;
    }
    Merged m = f->get();
    f = merging_.erase(f);
    store_stats_.last_merge_ms = m.ms;
    if (m.img) {
      store_->put(std::move(m.img));
      ++store_stats_.images_made;
    } else {
      ++store_stats_.captures_dropped;
      store_stats_.last_dropped = "VM '" + m.vm + "': " + m.why;
    }
  }
}

json ControlServer::store_check(const std::string& vm, const std::string& file, const std::string& block) {
  auto img = store_->find(vm);
  if (!img) throw CommandError("InvalidParameter", "the store holds no image of VM '" + vm + "'");
  const store::Image::Block* b = img->block(block);
  if (!b) throw CommandError("InvalidParameter", "VM '" + vm + "''s image has no RAM block '" + block + "'");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw CommandError("InvalidParameter", "cannot read " + file);
  engine::CodecSet codec_set("");  // LZ4 and zstd; no compressdev off the workers
  const store::Image::CodecFor codecs = [&](pages::CodecKind k) { return codec_set.get(k, nullptr); };
  std::vector<uint8_t> want(pages::kPageSize), got(pages::kPageSize);
  uint64_t same = 0, different = 0, not_held = 0, unreadable = 0, beyond = 0;
  json first = nullptr;
  for (size_t idx = 0; idx < b->pages.size(); ++idx) {
    const store::Image::Page& pg = b->pages[idx];
    if (pg.content == store::Content::none) {
      ++not_held;
      continue;
    }
    in.seekg(std::streamoff(idx * pages::kPageSize));
    if (!in.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size()))) {
      in.clear();
      ++beyond;
      continue;
    }
    const std::string why = img->read(pg, got.data(), codecs);
    if (!why.empty()) {
      ++unreadable;
      if (first.is_null()) first = {{"page", idx}, {"why", why}};
    } else if (std::memcmp(want.data(), got.data(), want.size()) == 0) {
      ++same;
    } else {
      ++different;
      if (first.is_null()) first = {{"page", idx}, {"why", "bytes differ"}};
    }
  }
  return {{"vm", vm}, {"block", block}, {"pages", b->pages.size()}, {"identical", same}, {"different", different},
          {"not-held", not_held}, {"unreadable", unreadable}, {"beyond-file", beyond}, {"first-problem", first}};
}

json ControlServer::store_json() {
  json images = json::array();
  for (const auto& i : store_->list()) {
    char gen[20];
    std::snprintf(gen, sizeof gen, "%016llx", static_cast<unsigned long long>(i.generation));
    images.push_back({{"vm", i.vm}, {"generation", gen}, {"pages", i.pages}, {"pages-held", i.pages_held},
                      {"bytes", i.bytes}, {"carried", i.carried}, {"made-unix-ms", i.made_unix_ms}});
  }
  return {{"budget", store_->budget().limit()},
          {"used", store_->budget().used()},
          {"backing", std::string(store::to_string(store_->config().backing))},
          {"images", images},
          {"capturing", captures_pending_.size() + merging_.size()},
          {"images-made", store_stats_.images_made},
          {"evictions", store_->evictions()},
          {"captures-dropped", store_stats_.captures_dropped},
          {"last-dropped", store_stats_.last_dropped},
          {"last-merge-ms", store_stats_.last_merge_ms}};
}

json ControlServer::session_json(const engine::SessionInfo& info) {
  json j = to_json(info);
  auto m = migrations_.find(info.id);
  if (m != migrations_.end()) {
    j["progress"] = m->second.progress;
    if (!m->second.decision.empty()) j["postcopy-decision"] = m->second.decision;
    // The orchestrator knows phases the dataplane cannot see (negotiating,
    // postcopy) when it drives QEMU; the dataplane's completing and terminal
    // states win, and all of its states when a manager (libvirt) drives QEMU.
    if (m->second.qmp &&
        (info.state == engine::SessionState::prepared || info.state == engine::SessionState::precopy)) {
      j["state"] = m->second.phase;
    }
  }
  return j;
}

std::string ControlServer::switchover_decision(Migration& m, const json& ram, uint64_t now) {
  const double elapsed = double(now - m.started_ns) / 1e9;
  if (elapsed >= m.switchover_after_s) {
    if (m.switchover_after_s == 0) return "postcopy-first (switchover-after 0)";
    char b[160];
    std::snprintf(b, sizeof b, "precopy did not converge in %g s (switchover-after)", m.switchover_after_s);
    return b;
  }
  // The watchdog judges each completed pass over RAM (a new dirty sync)
  // after the first: the guest's dirty rate against what the link carried.
  const uint64_t syncs = ram.value("dirty-sync-count", uint64_t(0));
  if (syncs < 2 || syncs == m.watched_sync) return "";
  m.watched_sync = syncs;
  const double dirty = double(ram.value("dirty-pages-rate", uint64_t(0))) * 4096;  // bytes/s
  const double link = ram.value("mbps", 0.0) * 1e6 / 8;                             // bytes/s
  if (link > 0 && dirty >= kWatchdogShare * link) {
    ++m.behind_passes;
  } else {
    m.behind_passes = 0;
  }
  if (m.behind_passes < kWatchdogPasses) return "";
  char b[200];
  std::snprintf(b, sizeof b,
                "convergence watchdog: the guest dirtied %.1f MiB/s while the link carried %.1f MiB/s, for %u passes",
                dirty / 1048576, link / 1048576, m.behind_passes);
  return b;
}

json ControlServer::migrate(const json& args) {
  no_other_args(args, {"session", "peer", "src-qmp", "dst-qmp", "dst-incoming", "listen", "max-bandwidth",
                       "downtime-limit", "postcopy-after", "switchover-after", "postcopy-preempt", "multifd-channels",
                       "pages", "encrypt", "vm"});
  const uint32_t id = session_arg(args);
  std::string vm = args.contains("vm") ? vm_arg(args) : "";
  const std::string peer = string_arg(args, "peer");
  const bool has_src_qmp = args.contains("src-qmp");
  const std::string src_qmp = has_src_qmp ? string_arg(args, "src-qmp") : "";
  if (!args.contains("dst-qmp") && !args.contains("dst-incoming")) {
    throw CommandError("InvalidParameter", "give 'dst-qmp' (the daemons drive the destination QEMU) or "
                                           "'dst-incoming' (its -incoming URI)");
  }
  const std::string listen = args.contains("listen")
                                 ? string_arg(args, "listen")
                                 : "unix:" + id_.run_dir + "/" + id_.name + "-" + std::to_string(id) + ".sock";
  const uint64_t max_bw = uint_arg_or(args, "max-bandwidth", uint64_t(1) << 50, 0);
  pages::PagePolicy policy;
  try {
    if (args.contains("pages")) policy = page_policy_from_json(args["pages"]);
  } catch (const std::invalid_argument& e) {
    throw CommandError("InvalidParameter", e.what());
  }
  const uint64_t downtime_ms = uint_arg_or(args, "downtime-limit", 600000, 300);
  // Postcopy policy: switchover-after S switches to postcopy S seconds
  // after the request at the latest (0: postcopy-first, as soon as QEMU is
  // migrating), earlier when the convergence watchdog sees precopy cannot
  // finish; postcopy-after S is the older form (0 there: never).
  if (args.contains("switchover-after") && args.contains("postcopy-after")) {
    throw CommandError("InvalidParameter", "give 'switchover-after' or 'postcopy-after', not both");
  }
  const bool has_switchover = args.contains("switchover-after");
  const double switchover_after = has_switchover ? double_arg_or(args, "switchover-after", 86400, 0)
                                                 : double_arg_or(args, "postcopy-after", 86400, 0);
  const bool postcopy = has_switchover || switchover_after > 0;
  // QEMU's postcopy-preempt channel (stream 17, ahead of the bulk): on by
  // default when the daemons set both QEMUs' capabilities themselves.
  const bool preempt =
      bool_arg_or(args, "postcopy-preempt", postcopy && has_src_qmp && args.contains("dst-qmp"));
  if (preempt && !postcopy) {
    throw CommandError("InvalidParameter", "'postcopy-preempt' needs a postcopy policy (switchover-after)");
  }
  // Multifd channels default to the dataplane's queues (each channel is a
  // stream of the session); off with a postcopy policy, which QEMU does not
  // combine with multifd.
  const uint64_t multifd = uint_arg_or(args, "multifd-channels", engine::Session::kMaxMultifdChannels,
                                       postcopy ? 0 : engines_.size());
  if (multifd > 0 && postcopy) {
    throw CommandError("InvalidParameter", "multifd-channels and a postcopy policy cannot be combined (QEMU 7.2)");
  }
  if (!peer_client_tls_) {
    throw CommandError("AuthError", "this daemon has no pre-shared key (--key-file) or certificates (--x509-dir): "
                                    "it cannot authenticate to a peer");
  }
  bool encrypt = id_.encrypt;
  if (args.contains("encrypt")) {
    const std::string e = string_arg(args, "encrypt");
    if (e != "required" && e != "off") throw CommandError("InvalidParameter", "'encrypt' must be 'required' or 'off'");
    encrypt = e == "required";
  }
  if (migrations_.count(id) && !migrations_[id].done) {
    throw CommandError("InvalidParameter", "session " + std::to_string(id) + " is already migrating");
  }
  try {
    qemu::unix_path_from_uri(listen);
  } catch (const std::invalid_argument& e) {
    throw CommandError("InvalidParameter", e.what());
  }
  Migration m;
  m.started_ns = engine::now_ns();
  // QEMU first: an unreachable QMP fails the request before the peer is asked.
  uint64_t ram_bytes = 0;
  if (has_src_qmp) {
    try {
      m.qmp = std::make_unique<QmpClient>(src_qmp);
      // The VM's identity for the page store: QEMU's UUID unless the
      // manager named it (QEMU without -uuid has none: all zeros).
      if (vm.empty()) {
        const json u = m.qmp->execute("query-uuid");
        const std::string uuid = u.value("UUID", "");
        if (!uuid.empty() && uuid != "00000000-0000-0000-0000-000000000000") vm = uuid;
      }
      const json mem = m.qmp->execute("query-memory-size-summary");
      ram_bytes = mem.value("base-memory", uint64_t(0));
    } catch (const QmpError& e) {
      throw CommandError("QemuError", e.what());
    }
  }

  m.postcopy = postcopy;
  m.switchover_after_s = switchover_after;
  broadcast_session({{"session", id}, {"role", "source"}, {"state", "negotiating"}});

  json offer = {{"session", id},
                {"postcopy", postcopy},
                {"postcopy-preempt", preempt},
                {"multifd-channels", multifd},
                {"pages", to_json(policy)},
                {"encrypt", encrypt ? "required" : "off"},
                {"fabric", {{"ip", id_.caps.ip}, {"mac", id_.caps.mac}, {"udp_port", id_.caps.udp_port},
                            {"queues", id_.caps.queues}}}};
  if (!vm.empty()) offer["vm"] = vm;
  if (args.contains("dst-qmp")) offer["dst-qmp"] = string_arg(args, "dst-qmp");
  if (args.contains("dst-incoming")) offer["dst-incoming"] = string_arg(args, "dst-incoming");
  OfferResult r;
  try {
    r = offer_session(peer, *peer_client_tls_, id_.caps, offer);
  } catch (const PeerError& e) {
    ++offers_failed_;
    if (e.error_class() == "AuthError") ++offer_auth_failures_;
    throw CommandError(e.error_class(), e.what());
  }
  const json fab = r.accept.value("fabric", json::object());
  // The destination said yes to what we asked, or the session does not
  // start: a reply without the same "encrypt" is not taken as consent.
  const std::string agreed = r.accept.contains("encrypt") && r.accept["encrypt"].is_string()
                                 ? r.accept["encrypt"].get<std::string>() : "off";
  if (agreed != (encrypt ? "required" : "off")) {
    encrypt_refusals_.fetch_add(1, std::memory_order_relaxed);
    throw CommandError("PeerError", std::string("the destination answered encrypt '") + agreed + "' to an offer of '" +
                                        (encrypt ? "required" : "off") + "'");
  }
  engine::SessionParams p;
  p.id = id;
  p.role = engine::Role::source;
  p.qemu_uri = listen;
  p.max_bandwidth = max_bw;
  p.pages = policy;
  p.postcopy_preempt = preempt;
  if (encrypt) {
    p.keys = derive_session_keys(r.session_key, true);
    p.keys->engine = id_.cipher;
  } else {
    p.auth = derive_auth_secret(r.session_key);
  }
  p.peer = peer_fabric_from_accept(r.accept, p.peer_queues);
  // The destination holds an image of this VM: its page table comes first.
  p.table_expected = !vm.empty() && r.accept.contains("image") && r.accept["image"].is_object();
  // This host's own image of the VM: pages changed since the destination's
  // image go as their changes against the version both hold.
  if (p.table_expected) p.image = store_->find(vm);
  p.vm = vm;
  start_capture(p, ram_bytes);
  add_session_parts(p);
  m.phase = "prepared";
  if (has_src_qmp) {
    try {
      m.qmp->set_capabilities({{"return-path", true}, {"events", true}, {"postcopy-ram", postcopy},
                               {"postcopy-preempt", preempt}, {"multifd", multifd > 0}});
      // Lift QEMU's own cap (128 MiB/s by default): the fabric paces.
      json params = {{"max-bandwidth", int64_t(1) << 40}, {"downtime-limit", downtime_ms}};
      if (multifd) params["multifd-channels"] = multifd;
      m.qmp->execute("migrate-set-parameters", params);
      m.qmp->execute("migrate", {{"uri", listen}});
      m.phase = "precopy";
    } catch (const QmpError& e) {
      engine::Engine& owner = owner_of(id);
      on_worker(owner, [&owner, id, what = std::string(e.what())] { owner.cancel_session(id, what); });
      throw CommandError("QemuError", e.what());
    }
  }
  migrations_[id] = std::move(m);
  broadcast_session({{"session", id}, {"role", "source"}, {"state", migrations_[id].phase}});
  return {{"session", id}, {"state", migrations_[id].phase}, {"migrate-uri", listen},
          {"peer-incoming-uri", r.accept.value("incoming-uri", "")}};
}

json ControlServer::accept_offer(const json& offer, const Bytes& session_key) {
  // Runs on the peer channel's thread: it touches only engines (through
  // their task rings) and its own QMP connection.
  const SessionOffer o = parse_session_offer(offer, !id_.compressdev.empty(), id_.udp_base_port);
  // Both sides' --encrypt must agree (an offer without the member is from
  // a peer that does not encrypt): refused, never silently followed.
  const std::string asked = offer.contains("encrypt") && offer["encrypt"].is_string()
                                ? offer["encrypt"].get<std::string>() : "off";
  const std::string ours = id_.encrypt ? "required" : "off";
  if (asked != ours) {
    encrypt_refusals_.fetch_add(1, std::memory_order_relaxed);
    throw PeerError("PeerError", "the source offers encrypt '" + asked + "', this destination has --encrypt " + ours);
  }
  const uint32_t id = o.session;
  std::string uri;
  std::unique_ptr<QmpClient> qmp;
  std::shared_ptr<const store::Image> image;
  try {
    if (o.has_dst_qmp) {
      uri = "unix:" + id_.run_dir + "/" + id_.name + "-" + std::to_string(id) + "-in.sock";
      qmp = std::make_unique<QmpClient>(o.dst_qmp);
      const uint64_t multifd = o.multifd_channels;
      qmp->set_capabilities({{"return-path", true}, {"events", true}, {"postcopy-ram", o.postcopy},
                             {"postcopy-preempt", o.postcopy_preempt}, {"multifd", multifd > 0}});
      if (multifd) qmp->execute("migrate-set-parameters", {{"multifd-channels", multifd}});
    } else {
      uri = o.dst_incoming;
    }
    engine::SessionParams p;
    p.id = id;
    p.role = engine::Role::destination;
    p.qemu_uri = uri;
    // The source's page policy: with its unchanged filter on, PAGE_SAME
    // records come and this session checks them (one owner: not spread).
    p.pages = o.pages;
    p.postcopy_preempt = o.postcopy_preempt;
    if (id_.encrypt) {
      p.keys = derive_session_keys(session_key, false);
      p.keys->engine = id_.cipher;
    } else {
      p.auth = derive_auth_secret(session_key);
    }
    // Warm re-migration: only this VM's own image, never another's.
    if (!o.vm.empty()) {
      p.vm = o.vm;
      p.image = store_->find(p.vm);
      // A table the source would refuse as too large is not offered.
      if (p.image && p.image->info().pages > store::PageTable::kMaxTablePages) p.image = nullptr;
      image = p.image;
      start_capture(p, 0);
    }
    // Answers go to the source's workers that own the streams.
    p.peer_udp_port = o.peer_udp_port;
    p.peer_queues = o.peer_queues;
    try {
      add_session_parts(p);
    } catch (const CommandError& e) {
      throw PeerError("PeerError", e.what());
    }
    // QEMU listens only once the session exists, so the dataplane finds it.
    if (qmp) qmp->execute("migrate-incoming", {{"uri", uri}});
    // Postcopy: the VM runs here as soon as QEMU can start it (at the
    // switchover; `cont` on an incoming QEMU only arms its autostart), not
    // when the manager gets round to it.
    if (qmp && o.postcopy) qmp->execute("cont");
  } catch (const QmpError& e) {
    throw PeerError("QemuError", e.what());
  } catch (const std::invalid_argument& e) {
    throw PeerError("PeerError", e.what());
  }
  json reply = {{"session", id},
          {"incoming-uri", uri},
          {"encrypt", ours},
          {"fabric", {{"ip", id_.caps.ip}, {"mac", id_.caps.mac}, {"udp_port", id_.caps.udp_port},
                      {"queues", id_.caps.queues}}}};
  if (image) {
    char gen[20];
    std::snprintf(gen, sizeof gen, "%016llx", static_cast<unsigned long long>(image->info().generation));
    reply["image"] = {{"generation", gen}, {"pages-held", image->info().pages_held}};
  }
  return reply;
}

void ControlServer::tick() {
  const uint64_t now = engine::now_ns();
  if (now - last_tick_ns_ < 200'000'000) return;
  last_tick_ns_ = now;
  collect_captures();
  for (auto& [id, m] : migrations_) {
    if (m.done || !m.qmp) continue;
    const std::string before = m.phase;
    std::optional<engine::SessionInfo> info;
    try {
      info = session_info(id);
    } catch (const CommandError&) {
      continue;  // the worker is busy; next tick
    }
    if (!info) {
      m.done = true;
      continue;
    }
    try {
      const json q = m.qmp->execute("query-migrate");
      const std::string status = q.value("status", "none");
      const json ram = q.value("ram", json::object());
      m.progress = {{"qemu-status", status},
                    {"total-time-ms", q.value("total-time", 0)},
                    {"downtime-ms", q.value("downtime", 0)},
                    {"expected-downtime-ms", q.value("expected-downtime", 0)},
                    {"transferred", ram.value("transferred", 0)},
                    {"remaining", ram.value("remaining", 0)},
                    {"total", ram.value("total", 0)},
                    {"mbps", ram.value("mbps", 0.0)},
                    {"dirty-rate", ram.value("dirty-pages-rate", 0) * 4096},
                    {"dirty-sync-count", ram.value("dirty-sync-count", 0)}};
      if (status == "active") m.phase = "precopy";
      if (status.rfind("postcopy", 0) == 0) m.phase = "postcopy";
      if (status == "device" || status == "pre-switchover" || status == "completed") m.phase = "completing";
      if (status == "failed" || status == "cancelled") {
        const std::string why = "QEMU reports the migration " + status +
                                (q.contains("error-desc") ? ": " + q["error-desc"].get<std::string>() : "");
        engine::Engine& owner = owner_of(id);
        on_worker(owner, [&owner, id = id, why] { owner.cancel_session(id, why); });  // clang 14: no binding captures
        m.done = true;
      }
      // Postcopy by policy: at the deadline (0: at once), or when the
      // watchdog sees that precopy cannot converge; the VM then runs at the
      // destination at once.
      if ((status == "active" || status == "setup") && m.postcopy && !m.postcopy_started) {
        std::string why = switchover_decision(m, ram, now);
        if (!why.empty()) {
          m.qmp->execute("migrate-start-postcopy");
          m.postcopy_started = true;
          m.decision = why;
          std::cerr << "memmotiond[" << id_.name << "]: session " << id << ": switched to postcopy: " << why
                    << std::endl;
          broadcast_session({{"session", id}, {"role", "source"}, {"state", "postcopy"}, {"decision", why}});
        }
      }
    } catch (const QmpError& e) {
      m.progress["qmp-error"] = e.what();
    }
    if (engine::is_terminal(info->state)) m.done = true;
    if (m.phase != before && !m.done) broadcast_session(session_json(*info));
  }
}

namespace {
// Prometheus text: one metric family per counter, labels from the path.
void emit(std::string& out, const std::string& name, const std::string& labels, const json& value,
          std::map<std::string, bool>& typed, const char* type = "counter") {
  if (!value.is_number()) return;
  if (!typed[name]) {
    out += "# TYPE " + name + " " + type + "\n";
    typed[name] = true;
  }
  out += name + "{" + labels + "} " + value.dump() + "\n";
}
}  // namespace

std::string ControlServer::metrics_text() {
  std::string out;
  std::map<std::string, bool> typed;
  const json queues = id_.queue_stats ? id_.queue_stats() : json::array();
  for (size_t q = 0; q < queues.size(); ++q) {
    for (auto& [k, v] : queues[q].items()) {
      emit(out, "memmotion_port_" + k + "_total", "queue=\"" + std::to_string(q) + "\"", v, typed);
    }
  }
  for (size_t w = 0; w < engines_.size(); ++w) {
    const json st = to_json(engines_[w]->stats());
    const std::string lw = "worker=\"" + std::to_string(w) + "\"";
    for (auto& [k, v] : st.items()) {
      if (k == "rx_invalid") {
        for (auto& [reason, n] : v.items()) {
          emit(out, "memmotion_engine_rx_invalid_total", lw + ",reason=\"" + reason + "\"", n, typed);
        }
      } else if (k == "sessions") {
        emit(out, "memmotion_engine_sessions", lw, v, typed, "gauge");
      } else {
        emit(out, "memmotion_engine_" + k + "_total", lw, v, typed);
      }
    }
  }
  if (peer_server_) {
    emit(out, "memmotion_peer_auth_failures_total", "", peer_server_->auth_failures(), typed);
    emit(out, "memmotion_peer_handshake_failures_total", "", peer_server_->handshake_failures(), typed);
    emit(out, "memmotion_peer_sessions_accepted_total", "", peer_server_->sessions_accepted(), typed);
    emit(out, "memmotion_peer_timeouts_total", "", peer_server_->timeouts(), typed);
    emit(out, "memmotion_peer_busy_refusals_total", "", peer_server_->busy_refusals(), typed);
    emit(out, "memmotion_peer_handshakes_total", "", peer_server_->handshakes_done(), typed);
  }
  emit(out, "memmotion_peer_offers_failed_total", "", offers_failed_, typed);
  emit(out, "memmotion_peer_offer_auth_failures_total", "", offer_auth_failures_, typed);
  const json control = stats_.to_json();  // items() does not keep a temporary alive
  for (auto& [k, v] : control.items()) emit(out, "memmotion_control_" + k + "_total", "", v, typed);
  emit(out, "memmotion_peer_encrypt_refusals_total", "", encrypt_refusals_.load(), typed);
  std::vector<engine::SessionInfo> infos;
  try {
    infos = all_session_infos();
  } catch (const CommandError&) {
  }
  {
    for (const auto& info : infos) {
      const json j = session_json(info);
      const std::string l = "session=\"" + std::to_string(info.id) + "\",role=\"" +
                            engine::to_string(info.role) + "\"";
      for (auto& [k, v] : j["counters"].items()) emit(out, "memmotion_session_" + k + "_total", l, v, typed);
      if (j.contains("faults")) {
        const json& f = j["faults"];
        for (const char* q : {"p50", "p99", "max"}) {
          emit(out, "memmotion_session_fault_latency_us", l + ",quantile=\"" + q + "\"", f[std::string(q) + "-us"],
               typed, "gauge");
        }
      }
      for (const auto& part : info.parts) {
        emit(out, "memmotion_session_worker_pages_total", l + ",worker=\"" + std::to_string(part.worker) + "\"",
             part.pages, typed);
      }
      emit(out, "memmotion_session_state", l + ",state=\"" + j["state"].get<std::string>() + "\"", 1, typed, "gauge");
      if (j.contains("progress")) {
        for (auto& [k, v] : j["progress"].items()) {
          std::string name = k;
          std::replace(name.begin(), name.end(), '-', '_');
          emit(out, "memmotion_session_qemu_" + name, l, v, typed, "gauge");
        }
      }
    }
  }
  return out;
}

void ControlServer::serve_metrics(int fd) {
  // Local scrapes only: read the request line with a short deadline.
  std::string req;
  char buf[4096];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    req.append(buf, size_t(n));
  }
  std::string status = "200 OK", body;
  if (req.rfind("GET /metrics", 0) == 0) {
    body = metrics_text();
  } else {
    status = "404 Not Found";
    body = "memmotiond serves GET /metrics\n";
  }
  const std::string resp = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  size_t off = 0;
  while (off < resp.size()) {
    const ssize_t w = ::send(fd, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += size_t(w);
  }
  ::close(fd);
}

void ControlServer::broadcast_session(const json& session) {
  const auto ts = std::chrono::system_clock::now().time_since_epoch();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(ts).count();
  broadcast({{"event", "SESSION_STATE"},
             {"data", session},
             {"timestamp", {{"seconds", us / 1000000}, {"microseconds", us % 1000000}}}});
}

json ControlStats::to_json() const {
  return {{"clients", clients},
          {"requests", requests},
          {"errors", errors},
          {"malformed_requests", malformed_requests},
          {"oversized_requests", oversized_requests},
          {"timed_out_requests", timed_out_requests},
          {"unknown_session", unknown_session}};
}

json ControlServer::execute(const json& request, std::atomic<bool>& stop) {
  json reply;
  ++stats_.requests;
  try {
    Request r;
    try {
      r = parse_request(request);
    } catch (const CommandError&) {
      ++stats_.malformed_requests;
      throw;
    }
    reply = {{"return", dispatch(r.command, r.args, stop)}};
  } catch (const CommandError& e) {
    reply = error_reply(e.error_class(), e.what());
    if (e.error_class() == "SessionNotFound") ++stats_.unknown_session;
  } catch (const std::exception& e) {
    reply = error_reply("GenericError", e.what());
  }
  if (reply.contains("error")) ++stats_.errors;
  if (request.is_object() && request.contains("id")) reply["id"] = request["id"];
  return reply;
}

namespace {
// Local clients read promptly; wait briefly rather than drop a reply.
bool send_line(int fd, const json& j) { return send_json_line(fd, j, 1000); }
}  // namespace

void ControlServer::broadcast(const json& event) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (!send_line(it->first, event)) {
      ::close(it->first);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void ControlServer::run(std::atomic<bool>& stop) {
  epoll_event evs[16];
  while (!stop) {
    const int n = ::epoll_wait(epoll_fd_, evs, 16, 200);
    tick();
    for (int i = 0; i < n && !stop; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == metrics_fd_) {
        for (int c; (c = ::accept4(metrics_fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) serve_metrics(c);
        continue;
      }
      if (fd == listen_fd_) {
        for (int c; (c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = c;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c, &ev);
          clients_[c];
          ++stats_.clients;
          send_line(c, {{"QMP",
                         {{"version", {{"memmotion", MEMMOTION_VERSION}}},
                          {"capabilities", json::array()}}}});
        }
        continue;
      }
      engine::Engine* ev_engine = nullptr;
      for (engine::Engine* e : engines_) {
        if (fd == e->event_fd()) ev_engine = e;
      }
      if (ev_engine) {
        for (auto info : ev_engine->take_events()) {
          if (engines_.size() > 1 && engine::is_terminal(info.state)) {
            // The summary covers the parts on the other workers too.
            try {
              if (auto all = session_info(info.id)) info = *all;
            } catch (const CommandError&) {
            }
          }
          std::cerr << "memmotiond[" << id_.name << "]: session " << info.id << " ("
                    << engine::to_string(info.role) << ") " << engine::to_string(info.state)
                    << (info.error.empty() ? "" : ": " + info.error) << std::endl;
          if (engine::is_terminal(info.state)) std::cerr << session_summary(info);
          broadcast_session(session_json(info));
        }
        continue;
      }
      auto it = clients_.find(fd);
      if (it == clients_.end()) continue;
      Client& client = it->second;
      char buf[65536];
      const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      bool drop = r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
      if (r > 0) {
        if (client.line.empty()) client.line_since_ns = engine::now_ns();
        client.line.append(buf, size_t(r));
      }
      for (size_t nl; !drop && (nl = client.line.find('\n')) != std::string::npos;) {
        const std::string line = client.line.substr(0, nl);
        client.line.erase(0, nl + 1);
        client.line_since_ns = client.line.empty() ? 0 : engine::now_ns();
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json reply;
        try {
          reply = execute(parse_request_json(line), stop);
        } catch (const CommandError& e) {  // not JSON (execute() itself never throws)
          ++stats_.requests;
          ++stats_.malformed_requests;
          ++stats_.errors;
          reply = error_reply(e.error_class(), e.what());
        }
        drop = !send_line(fd, reply);
      }
      if (drop) {
        ::close(fd);
        clients_.erase(it);
      } else if (client.line.size() > kMaxRequest) {
        ++stats_.oversized_requests;
        cut_off(it, "request larger than " + std::to_string(kMaxRequest) + " bytes");
      }
    }
    // Requests that never end: cut off once their deadline has passed.
    const uint64_t now = engine::now_ns();
    for (auto it = clients_.begin(); it != clients_.end();) {
      auto next = std::next(it);
      if (it->second.line_since_ns && now - it->second.line_since_ns > kRequestDeadlineMs * 1'000'000) {
        ++stats_.timed_out_requests;
        cut_off(it, "request not completed within " + std::to_string(kRequestDeadlineMs) + " ms");
      }
      it = next;
    }
  }
}

void ControlServer::cut_off(std::map<int, Client>::iterator it, const std::string& why) {
  ++stats_.requests;
  ++stats_.errors;
  send_line(it->first, error_reply("GenericError", why + "; disconnecting"));
  ::close(it->first);
  clients_.erase(it);
}

}  // namespace mm::control
