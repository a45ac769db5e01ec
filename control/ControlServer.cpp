#include "control/ControlServer.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "control/SessionJson.hpp"

namespace mm::control {

using nlohmann::json;

namespace {

constexpr auto kWorkerTimeout = std::chrono::milliseconds(3000);

json error_reply(const std::string& cls, const std::string& desc) {
  return {{"error", {{"class", cls}, {"desc", desc}}}};
}

// Argument accessors that turn a wrong or missing argument into a clear
// InvalidParameter error naming it.
const json& arg(const json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end()) throw CommandError("InvalidParameter", std::string("missing argument '") + name + "'");
  return *it;
}

uint64_t uint_arg(const json& args, const char* name, uint64_t max, uint64_t min = 0) {
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

std::string string_arg(const json& args, const char* name) {
  const json& v = arg(args, name);
  if (!v.is_string()) throw CommandError("InvalidParameter", std::string("argument '") + name + "' must be a string");
  return v.get<std::string>();
}

void no_other_args(const json& args, std::initializer_list<const char*> known) {
  for (auto& [k, v] : args.items()) {
    bool ok = false;
    for (const char* n : known) ok |= k == n;
    if (!ok) throw CommandError("InvalidParameter", "unknown argument '" + k + "'");
  }
}

uint32_t session_arg(const json& args) { return uint32_t(uint_arg(args, "session", UINT32_MAX, 1)); }

}  // namespace

ControlServer::ControlServer(const std::string& path, std::vector<engine::Engine*> engines,
                             DaemonIdentity id)
    : path_(path), engines_(std::move(engines)), id_(std::move(id)) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw std::runtime_error("control socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 16) != 0) {
    throw std::runtime_error("cannot listen on control socket " + path + ": " + strerror(errno));
  }
  ::chmod(path.c_str(), 0660);  // the hypervisor's group may drive us; others may not
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  for (engine::Engine* e : engines_) {
    ev.data.fd = e->event_fd();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, e->event_fd(), &ev);
  }
}

ControlServer::~ControlServer() {
  for (auto& [fd, buf] : clients_) ::close(fd);
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
                          "session-start", "query-session", "query-sessions", "session-cancel",
                          "query-stats", "quit"}) {
      list.push_back({{"name", c}});
    }
    return list;
  }
  if (cmd == "session-prepare" || cmd == "session-start") {
    const bool source = cmd == "session-start";
    if (source) {
      no_other_args(args, {"session", "listen", "peer-ip", "peer-mac", "peer-udp-port", "peer-queues",
                           "max-bandwidth"});
    } else {
      no_other_args(args, {"session", "qemu-uri", "peer-udp-port", "peer-queues", "max-bandwidth"});
    }
    engine::SessionParams p;
    p.id = session_arg(args);
    p.role = source ? engine::Role::source : engine::Role::destination;
    p.qemu_uri = string_arg(args, source ? "listen" : "qemu-uri");
    // WIRE.md: a session's packets go to base_port + the queue of the
    // peer's worker that owns it (the same id % workers rule on both sides).
    const uint64_t peer_base = uint_arg_or(args, "peer-udp-port", 65535, id_.udp_base_port);
    const uint64_t peer_queues = uint_arg_or(args, "peer-queues", 64, engines_.size());
    if (peer_base + p.id % peer_queues > 65535) {
      throw CommandError("InvalidParameter", "peer-udp-port + the session's queue exceeds 65535");
    }
    const uint16_t peer_port = uint16_t(peer_base + p.id % peer_queues);
    p.max_bandwidth = args.contains("max-bandwidth") ? uint_arg(args, "max-bandwidth", uint64_t(1) << 50) : 0;
    try {
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
    engine::Engine& owner = owner_of(p.id);
    on_worker(owner, [&owner, p] {
      try {
        owner.add_session(p);
      } catch (const std::invalid_argument& e) {
        throw CommandError("InvalidParameter", e.what());
      }
    });
    json r = {{"session", p.id}, {"state", "prepared"}};
    if (source) r["migrate-uri"] = p.qemu_uri;
    return r;
  }
  if (cmd == "query-session") {
    no_other_args(args, {"session"});
    const uint32_t id = session_arg(args);
    auto out = std::make_shared<std::optional<engine::SessionInfo>>();
    engine::Engine& owner = owner_of(id);
    on_worker(owner, [&owner, id, out] { *out = owner.session_info(id); });
    if (!*out) throw CommandError("SessionNotFound", "no session " + std::to_string(id));
    return to_json(**out);
  }
  if (cmd == "query-sessions") {
    no_other_args(args, {});
    json list = json::array();
    for (engine::Engine* e : engines_) {
      auto out = std::make_shared<std::vector<engine::SessionInfo>>();
      on_worker(*e, [e, out] { *out = e->session_infos(); });
      for (auto& s : *out) list.push_back(to_json(s));
    }
    return list;
  }
  if (cmd == "session-cancel") {
    no_other_args(args, {"session"});
    const uint32_t id = session_arg(args);
    auto found = std::make_shared<bool>(false);
    engine::Engine& owner = owner_of(id);
    on_worker(owner, [&owner, id, found] { *found = owner.cancel_session(id, "cancelled by the operator"); });
    if (!*found) throw CommandError("SessionNotFound", "no session " + std::to_string(id));
    return json::object();
  }
  if (cmd == "query-stats") {
    no_other_args(args, {});
    json workers = json::array();
    for (engine::Engine* e : engines_) workers.push_back(to_json(e->stats()));
    return {{"port", id_.port_stats ? id_.port_stats() : json::object()},
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

json ControlServer::execute(const json& request, std::atomic<bool>& stop) {
  json reply;
  try {
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
    json args = json::object();
    if (auto a = request.find("arguments"); a != request.end()) {
      if (!a->is_object()) throw CommandError("GenericError", "'arguments' must be an object");
      args = *a;
    }
    reply = {{"return", dispatch(exe->get<std::string>(), args, stop)}};
  } catch (const CommandError& e) {
    reply = error_reply(e.error_class(), e.what());
  } catch (const std::exception& e) {
    reply = error_reply("GenericError", e.what());
  }
  if (request.is_object() && request.contains("id")) reply["id"] = request["id"];
  return reply;
}

namespace {
bool send_line(int fd, const json& j) {
  const std::string s = j.dump() + "\n";
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += size_t(w);
    } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      // Local clients read promptly; wait briefly rather than drop a reply.
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 1000) <= 0) return false;
    } else {
      return false;
    }
  }
  return true;
}
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
    for (int i = 0; i < n && !stop; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == listen_fd_) {
        for (int c; (c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = c;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c, &ev);
          clients_[c];
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
        for (const auto& info : ev_engine->take_events()) {
          std::cerr << "memmotiond[" << id_.name << "]: session " << info.id << " ("
                    << engine::to_string(info.role) << ") " << engine::to_string(info.state)
                    << (info.error.empty() ? "" : ": " + info.error) << std::endl;
          const auto ts = std::chrono::system_clock::now().time_since_epoch();
          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(ts).count();
          broadcast({{"event", "SESSION_STATE"},
                     {"data", to_json(info)},
                     {"timestamp", {{"seconds", us / 1000000}, {"microseconds", us % 1000000}}}});
        }
        continue;
      }
      auto it = clients_.find(fd);
      if (it == clients_.end()) continue;
      char buf[65536];
      const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      bool drop = r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
      if (r > 0) it->second.append(buf, size_t(r));
      for (size_t nl; !drop && (nl = it->second.find('\n')) != std::string::npos;) {
        const std::string line = it->second.substr(0, nl);
        it->second.erase(0, nl + 1);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json reply;
        try {
          reply = execute(json::parse(line), stop);
        } catch (const json::parse_error& e) {
          reply = error_reply("GenericError", std::string("malformed JSON: ") + e.what());
        }
        drop = !send_line(fd, reply);
      }
      if (!drop && it->second.size() > kMaxRequest) {
        send_line(fd, error_reply("GenericError", "request larger than " +
                                                      std::to_string(kMaxRequest) + " bytes"));
        drop = true;
      }
      if (drop) {
        ::close(fd);
        clients_.erase(it);
      }
    }
  }
}

}  // namespace mm::control
