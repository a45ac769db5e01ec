#include "dataplane/engine/Session.hpp"

#include <unistd.h>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mm::engine {

namespace {
// What is buffered toward a slow destination QEMU (it must hold one whole
// message, and on a multifd channel the largest rebuilt packet).
constexpr size_t kQemuOutBuffer = 5 << 20;
static_assert(kQemuOutBuffer >= kMaxMessage, "a destination relay must hold the largest message");
// The source QEMU is written to only on its main channel (the return
// path), and never more than one message at a time is held for it; its
// multifd channels are only read, so they get no buffer at all.
constexpr size_t kSourceMainOutBuffer = kMaxMessage;
size_t qemu_out_buffer(Role role, uint16_t stream) {
  if (role == Role::destination) return kQemuOutBuffer;
  return stream == 0 ? kSourceMainOutBuffer : 0;
}
// How long a destination QEMU's full accept backlog is waited out.
constexpr uint64_t kConnectPatienceNs = 5'000'000'000;
}  // namespace

const char* to_string(Role r) { return r == Role::source ? "source" : "destination"; }

const char* to_string(SessionState s) {
  switch (s) {
    case SessionState::prepared: return "prepared";
    case SessionState::precopy: return "precopy";
    case SessionState::completing: return "completing";
    case SessionState::completed: return "completed";
    case SessionState::failed: return "failed";
    case SessionState::cancelled: return "cancelled";
  }
  return "unknown";
}

// What the main-channel observer reports, applied to the unchanged filter:
// a page written by the main channel in epoch e (the RAM EOS count before
// it) may not be skipped by a multifd packet until it was sent again.
struct Session::MainSink final : qemu::MainChannelObserver::Sink {
  explicit MainSink(Session& s) : s(s) {}
  void on_zero_page(std::string_view block, uint64_t offset) override {
    const uint64_t zero = pages::record_hash(pages::zero_page_hash());
    written(block, offset, &zero);
    if (store::Capture* c = s.captures_.empty() ? nullptr : s.captures_[0].get()) {
      c->page(c->block(block), offset / pages::kPageSize, uint32_t(s.observer_->eos_count()), pages::zero_page_hash(),
              store::Content::zero);
    }
  }
  void on_page(std::string_view block, uint64_t offset) override {
    written(block, offset);
    // The relay does not hold the page's bytes for the observer.
    if (store::Capture* c = s.captures_.empty() ? nullptr : s.captures_[0].get()) {
      c->lost(c->block(block), offset / pages::kPageSize, uint32_t(s.observer_->eos_count()));
    }
  }
  void written(std::string_view block, uint64_t offset, const uint64_t* hash = nullptr) {
    if (!s.info_.pages.unchanged) return;  // nobody reads the filter
    const uint32_t epoch = uint32_t(s.observer_->eos_count());
    if (s.info_.role == Role::source) {
      s.filter_.written_elsewhere(block, offset / pages::kPageSize, epoch);
    } else if (s.delivered_) {
      // Destination: what the main channel gave QEMU, entered in epoch
      // order with the multifd streams' writes (Session::same_gate).
      MainWrite w{&s.delivered_->block(block), offset / pages::kPageSize, epoch, hash ? *hash : 0, !hash};
      if (s.ordered_channels_ == 0) {
        s.apply(w);
      } else {
        s.main_writes_.push_back(w);
      }
    }
  }
  // Epochs are read from the observer (eos_count()). The first EOS ends
  // the setup, after the configuration: whether EOS epochs order the
  // channels' SYNCs is known by then.
  void on_eos(uint64_t n) override {
    if (n == 1 && !s.observer_->sync_before_each_eos()) {
      off("off: machine type '" + s.observer_->machine() +
          "' is not known to put a multifd SYNC before every RAM EOS (QEMU 8.1+ machine types sync once per round)");
    }
  }
  void on_multifd_flush() override {
    off("off: QEMU sends MULTIFD_FLUSH (8.1+ machine type): multifd SYNCs no longer follow RAM EOS markers");
  }
  void off(std::string why) {
    if (s.info_.pages.unchanged && s.info_.unchanged_note.empty()) s.info_.unchanged_note = std::move(why);
  }
  void on_opaque(std::string_view why) override { s.info_.main_channel_note = std::string(why); }
  Session& s;
};

// Destination, postcopy: page requests on the return path start a clock;
// pages on the preempt channel stop it (FaultClock.hpp).
struct Session::FaultSink final : qemu::ReturnPathObserver::Sink, qemu::MainChannelObserver::Sink {
  explicit FaultSink(Session& s) : s(s) {}
  void on_request(std::string_view block, uint64_t start, uint32_t) override {
    // Without the preempt channel the answers come on the main channel,
    // which is not parsed in postcopy: requests are only counted.
    if (s.info_.postcopy_preempt) {
      s.faults_->requested(block, start, s.now_);
    } else {
      s.faults_->counted();
    }
  }
  void on_page(std::string_view block, uint64_t offset) override { s.faults_->delivered(block, offset, s.now_); }
  void on_zero_page(std::string_view block, uint64_t offset) override { on_page(block, offset); }
  void on_eos(uint64_t) override {}
  void on_opaque(std::string_view why) override {
    if (s.info_.fault_note.empty()) s.info_.fault_note = "preempt channel not parsed from here on: " + std::string(why);
  }
  Session& s;
};

std::string Session::channel_name(uint16_t stream) {
  if (stream == 0) return "main channel";
  if (stream == kPreemptStream) return "postcopy-preempt channel";
  return "multifd channel " + std::to_string(stream - 1);
}

namespace {
// What captures logged so far, added to the session's store_* counters.
void add_store_counts(const std::vector<std::unique_ptr<store::Capture>>& caps, SessionCounters& c) {
  for (const auto& cap : caps) {
    if (!cap) continue;
    c.store_pages += cap->entries();
    c.store_pages_without_bytes += cap->pages_without_bytes();
    c.store_bytes += cap->bytes_held();
  }
}
}  // namespace

bool spreads(const SessionParams& p) { return !p.pages.unchanged; }

Session::Session(const SessionParams& p, const transport::TransportConfig& cfg, uint64_t now,
                 CodecSet* codecs, std::shared_ptr<SessionShare> share, uint16_t worker, PartLink* link)
    : share_(share ? std::move(share) : std::make_shared<SessionShare>(p.id, 1, false)),
      worker_(worker), link_(link), cfg_(cfg), peer_udp_port_(p.peer_udp_port), codecs_(codecs) {
  if (share_->workers() > 1 && !link_) throw std::logic_error("a session on several workers needs a PartLink");
  for (uint16_t i = 0; i < kStreams; ++i) {
    relays_.push_back(std::make_unique<qemu::ChannelRelay>(owns(i) ? qemu_out_buffer(p.role, i) : 0));
  }
  sources_.resize(kStreams);
  rebuilders_.resize(kStreams);
  info_.pages = p.pages;
  info_.vm = p.vm;
  info_.home = home();
  info_.postcopy_preempt = p.postcopy_preempt;
  if (p.role == Role::source) {
    if (p.pages.codec != pages::CodecKind::raw) {
      std::string why;
      codec_ = codecs_ ? codecs_->get(p.pages.codec, &why) : nullptr;
      if (!codec_) {
        throw std::invalid_argument("codec " + std::string(pages::to_string(p.pages.codec)) +
                                    " is not available: " + (codecs_ ? why : "no codecs"));
      }
    }
    if (p.pages.auto_codec && codecs_ && p.pages.codec != pages::CodecKind::zstd) {
      heavy_codec_ = codecs_->get(pages::CodecKind::zstd, nullptr);
    }
    // The main channel is observed whatever the policy (its counters say
    // what QEMU sent there); only the unchanged filter depends on it.
    if (p.capture) {
      bin_ = p.capture;
      captures_.resize(kStreams);
      if (home()) captures_[0] = bin_->make();
    }
    if (p.table_expected) image_ = p.image;
    if (home() && p.table_expected) {
      share_->table_state.store(SessionShare::Table::expected, std::memory_order_release);
      table_in_ = std::make_unique<store::PageTable>();
      relays_[0]->set_table_sink([this](std::span<const uint8_t> b) { return on_table_chunk(b); });
    }
    if (home()) {
      main_sink_ = std::make_unique<MainSink>(*this);
      observer_ = format_.observe_main(*main_sink_);
      relays_[0]->set_tap([this](std::span<const uint8_t> b) { observer_->feed(b); });
    }
    if (!p.pages.unchanged) info_.unchanged_note = "off by policy";
  } else {
    if (format_.rebuilt_bound(format_.max_pages_per_packet()) > kQemuOutBuffer) {
      throw std::logic_error(std::string(format_.name()) + "'s largest multifd packet does not fit a channel's buffer");
    }
    image_ = p.image;
    // A destination that knows the VM logs what it writes to its QEMU, as
    // a source logs what it sends: the image of what it received.
    if (p.capture) {
      bin_ = p.capture;
      captures_.resize(kStreams);
    }
    // The source's unchanged filter is on: PAGE_SAME records come, each
    // checked against what this session last delivered for the page.
    if (p.pages.unchanged) delivered_ = std::make_unique<pages::DeliveredTable>();
    for (uint16_t i = 1; i < kStreams; ++i) {
      if (is_multifd(i) && owns(i)) {
        rebuilders_[i] = std::make_unique<MultifdRebuilder>(codecs_, format_);
        if (image_) rebuilders_[i]->set_image(image_);
        if (delivered_) rebuilders_[i]->set_delivered(delivered_.get());
        if (bin_) {
          captures_[i] = bin_->make();
          rebuilders_[i]->set_capture(captures_[i].get());
        }
      }
    }
    if ((bin_ || delivered_) && home()) {
      // The main channel's zero pages and RAM EOS epochs, from the records
      // written to QEMU.
      if (bin_) captures_[0] = bin_->make();
      main_sink_ = std::make_unique<MainSink>(*this);
      observer_ = format_.observe_main(*main_sink_);
      relays_[0]->set_out_tap([this](std::span<const uint8_t> b) { observer_->feed(b); });
    }
    if (image_ && home()) table_chunks_ = store::PageTable::of(*image_).encode();
    if (home()) {
      // Postcopy's page requests come back on stream 0; with the preempt
      // channel, their pages on stream 17 (both the home part's).
      faults_ = std::make_unique<FaultClock>();
      fault_sink_ = std::make_unique<FaultSink>(*this);
      return_path_ = std::make_unique<qemu::ReturnPathObserver>(*fault_sink_);
      relays_[0]->set_tap([this](std::span<const uint8_t> b) { return_path_->feed(b); });
      if (p.postcopy_preempt) {
        preempt_observer_ = std::make_unique<qemu::MainChannelObserver>(*fault_sink_, qemu::MainChannelObserver::Kind::preempt);
        relays_[kPreemptStream]->set_out_tap([this](std::span<const uint8_t> b) { preempt_observer_->feed(b); });
      }
    }
  }
  info_.id = p.id;
  info_.role = p.role;
  info_.qemu_uri = p.qemu_uri;
  info_.created_ns = now;
  qemu_path_ = qemu::unix_path_from_uri(p.qemu_uri);
  // An encrypted session's packets carry the GCM tag after their payload.
  transport::TransportConfig conn_cfg = cfg;
  if (p.keys) conn_cfg.max_payload -= uint32_t(wire::kTagSize);
  conn_ = std::make_unique<transport::Connection>(conn_cfg, p.id, kStreams, kMaxMessage, now);
  session_rate_ = p.max_bandwidth;
  conn_->set_max_bandwidth(p.max_bandwidth);
  info_.max_bandwidth = p.max_bandwidth;
  if (p.keys) {
    conn_->set_cipher(*p.keys);
  } else if (p.auth) {
    conn_->set_auth(*p.auth);
  }
  info_.authenticated = p.auth.has_value() || p.keys.has_value();
  info_.encrypted = p.keys.has_value();
  if (p.keys) info_.cipher = wire::to_string(conn_->rx_cipher_engine());
  conn_->set_peer_queues(p.peer_queues);
  if (p.role == Role::destination) {
    // A multifd stream holds at most kHeldMessages QEMU packets its QEMU
    // has not taken yet: the source then waits, and QEMU's own bandwidth
    // estimate stays honest even when messages are small (PAGE_STORED).
    for (uint16_t st = 1; st < kStreams; ++st) {
      if (is_multifd(st)) conn_->receiver(st).set_max_held_messages(kHeldMessages);
    }
  }
  // The pages a postcopy destination is waiting for overtake the bulk.
  conn_->set_priority(kPreemptStream, true);
  // A part other than the home one probes on the first stream it holds
  // (the peer's part holding that stream hears it) and never sends CLOSE.
  for (uint16_t st = 0; st < kStreams; ++st) {
    if (owns(st)) {
      conn_->set_control_stream(st);
      break;
    }
  }
  if (p.role == Role::source) {
    if (home()) listener_ = qemu::UnixListener(qemu_path_);
    conn_->set_peer(p.peer);
    info_.peer = transport::to_string(p.peer);
  }
  share_->part(worker_).last_rx_ns.store(now, std::memory_order_relaxed);
  share_->part(worker_).present.store(true, std::memory_order_release);
}

void Session::on_packet(const wire::Header& h, std::span<const uint8_t> payload,
                        const transport::PeerAddress& from, uint64_t now) {
  if (!conn_) return;
  if (info_.role == Role::destination && !heard_from_peer_) {
    // The destination learns where the source is from its first packet.
    transport::PeerAddress peer{from.mac, from.ip, peer_udp_port_};
    conn_->set_peer(peer);
    info_.peer = transport::to_string(peer);
  }
  heard_from_peer_ = true;
  if (!conn_->on_packet(h, payload, now)) {
    fail(now, "protocol error from peer: " + conn_->error());
    return;
  }
  if (conn_->peer_closed() && !is_terminal(info_.state)) {
    if (home()) {
      peer_closed(now, conn_->peer_close_reason(), conn_->peer_close_text());
    } else {
      link_->post(share_->home(), share_.get(),
                  [r = conn_->peer_close_reason(), t = conn_->peer_close_text()](Session& h, uint64_t n) {
                    h.peer_closed(n, r, t);
                  });
    }
  }
}

void Session::peer_closed(uint64_t now, wire::CloseReason reason, const std::string& text) {
  if (is_terminal(info_.state)) return;
  if (reason == wire::CloseReason::cancelled) {
    info_.error = "cancelled by peer: " + text;
    finish(now, SessionState::cancelled);
  } else {
    fail(now, "peer failed the session: " + text);
  }
}

void Session::attach_handed(uint16_t stream, int fd, uint64_t now) {
  if (is_terminal(info_.state) || !conn_ || relays_[stream]->attached()) {
    ::close(fd);
    return;
  }
  attach(stream, fd, now);
}

void Session::end(uint64_t now, SessionState s, const std::string& why) {
  if (is_terminal(info_.state)) return;
  info_.error = why;
  finish(now, s);
}

void Session::part_failed(uint64_t now, uint16_t worker, const std::string& why) {
  fail(now, "worker " + std::to_string(worker) + ": " + why);
}

Session::~Session() { hand_in_captures(); }

bool Session::send_table() {
  transport::MessageSender& tx = conn_->sender(0);
  bool work = false;
  while (table_next_ < table_chunks_.size()) {
    const auto& body = table_chunks_[table_next_];
    std::vector<uint8_t> msg(wire::kStoreTableOverhead + body.size());
    wire::RecordWriter w(msg);
    w.put_store_table(body);
    const size_t slots = (msg.size() + tx.slot_size() - 1) / tx.slot_size();
    if (tx.free_slots() < slots || !tx.submit_message(msg)) break;  // the window is full: next poll
    ++table_next_;
    work = true;
  }
  if (table_next_ == table_chunks_.size()) {
    table_chunks_.clear();
    table_chunks_.shrink_to_fit();
  }
  return work;
}

std::string Session::on_table_chunk(std::span<const uint8_t> body) {
  if (!table_in_) return "STORE_TABLE after the table was complete";
  std::string why = table_in_->add(body);
  if (!why.empty()) return why;
  if (table_in_->complete()) {
    info_.store_note = "destination holds an image: " + std::to_string(table_in_->pages_held()) + " pages";
    share_->publish_table(std::move(table_in_));
  }
  return {};
}

bool Session::waiting_for_table(uint64_t now) const {
  return share_->table_state.load(std::memory_order_acquire) == SessionShare::Table::expected &&
         now - info_.created_ns < kTableWaitNs;
}

std::string Session::capture_gap() const {
  if (info_.state != SessionState::completed) return "the migration did not complete";
  if (!observer_) return "the main channel was not observed";
  if (observer_->eos_count() == 0) return "no RAM EOS was seen on the main channel";
  if (!observer_->sync_before_each_eos() || observer_->multifd_flushes() > 0) {
    return "the machine type does not order multifd SYNCs by RAM EOS";
  }
  // After the last RAM record QEMU 7.2 sends the device state, which the
  // observer does not parse: that is where it should have stopped.
  const std::string& why = observer_->opaque_reason();
  if (!observer_->opaque() || (why.rfind("device state", 0) != 0 && why.rfind("end of the device state", 0) != 0)) {
    return "the main channel's RAM records were not all read (" + (why.empty() ? std::string("not ended") : why) + ")";
  }
  if (late_channels_ > 0) return "a multifd channel opened after setup";
  for (const auto& src : sources_) {
    if (src && src->passthrough()) return "QEMU compressed a multifd channel itself";
  }
  for (const auto& rb : rebuilders_) {
    if (rb && rb->passthrough()) return "QEMU compressed a multifd channel itself";
  }
  return {};
}

void Session::hand_in_captures() {
  if (!bin_) return;
  for (auto& src : sources_) {
    if (src) src->set_capture(nullptr);
  }
  for (auto& rb : rebuilders_) {
    if (rb) rb->set_capture(nullptr);
  }
  add_store_counts(captures_, handed_store_);
  std::string why;
  if (home()) {
    why = capture_gap();
  } else if (info_.state != SessionState::completed) {
    why = "the migration did not complete";
  } else {
    for (const auto& src : sources_) {
      if (src && src->passthrough()) why = "QEMU compressed a multifd channel itself";
    }
    for (const auto& rb : rebuilders_) {
      if (rb && rb->passthrough()) why = "QEMU compressed a multifd channel itself";
    }
  }
  for (size_t k = 1; k < captures_.size(); ++k) {
    const bool used = info_.role == Role::source ? sources_[k] && !sources_[k]->passthrough()
                                                 : rebuilders_[k] && rebuilders_[k]->packets() > 0;
    if (captures_[k] && !used) captures_[k].reset();
  }
  bin_->hand_in(std::move(captures_), home(), why);
  captures_.clear();
  bin_.reset();
}

void Session::attach(uint16_t stream, int fd, uint64_t now) {
  relays_[stream]->attach(fd);
  if (is_multifd(stream)) ++multifd_channels_;
  if (stream == 0) share_->main_attached.store(true, std::memory_order_release);
  if (is_multifd(stream) && info_.role == Role::source) {
    sources_[stream] = std::make_unique<MultifdSource>(uint16_t(stream - 1), info_.pages, codec_,
                                                       info_.pages.unchanged ? &filter_ : nullptr, kMaxMessage,
                                                       heavy_codec_, format_);
    if (bin_) {
      captures_[stream] = bin_->make();
      sources_[stream]->set_capture(captures_[stream].get());
    }
    if (image_) sources_[stream]->set_base_image(image_);
    if (channels_frozen_) {
      // QEMU opened this channel after setup: which epochs its packets
      // belong to is unknown, so nothing is skipped from now on.
      ++late_channels_;
      info_.unchanged_note = "off: a multifd channel appeared after setup";
    }
  }
  if (stream == 0 || (!home() && info_.state == SessionState::prepared)) {
    info_.state = SessionState::precopy;
    info_.started_ns = now;
    state_changed_ = true;
  }
}

bool Session::accept_channels(uint64_t now) {
  bool work = false;
  for (int fd; (fd = listener_.accept_one()) >= 0;) {
    unclassified_.push_back(fd);
    work = true;
  }
  // A channel is known by its first bytes (peeked, so the relay still
  // carries them): the main channel's QEVM header or a MultiFDInit packet.
  for (size_t i = 0; i < unclassified_.size();) {
    const int fd = unclassified_[i];
    uint8_t b[64];
    const size_t want = std::min(sizeof b, format_.classify_size());
    const ssize_t n = ::recv(fd, b, want, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      ::close(fd);  // connected and gone without a word
      unclassified_.erase(unclassified_.begin() + long(i));
      continue;
    }
    const auto kind = format_.classify({b, n > 0 ? size_t(n) : 0});
    // QEMU 7.2 writes the main channel's header and a multifd channel's
    // MultiFDInit as soon as it connects them; its postcopy-preempt channel
    // stays silent until a requested page goes on it, and QEMU opens it
    // only after the main channel. So once the main channel is here, a
    // silent connection of a session told to expect one is that channel.
    const bool preempt = kind.type == qemu::ChannelKind::need_more && n < 0 && info_.postcopy_preempt &&
                         relays_[0]->attached() && !relays_[kPreemptStream]->attached();
    if (kind.type == qemu::ChannelKind::need_more && !preempt) {
      ++i;
      continue;
    }
    unclassified_.erase(unclassified_.begin() + long(i));
    work = true;
    uint16_t stream = 0;
    std::string problem;
    if (preempt) {
      stream = kPreemptStream;
    } else if (kind.type == qemu::ChannelKind::main) {
      stream = 0;
    } else if (kind.type == qemu::ChannelKind::multifd && kind.multifd_id < kMaxMultifdChannels) {
      stream = uint16_t(1 + kind.multifd_id);
    } else if (kind.type == qemu::ChannelKind::multifd) {
      problem = "QEMU opened multifd channel " + std::to_string(kind.multifd_id) + "; at most " +
                std::to_string(kMaxMultifdChannels) + " are relayed (lower multifd-channels)";
    } else {
      problem = "a connection that is not a QEMU migration channel (first bytes " +
                qemu::describe_first_bytes({b, size_t(n)}) + ")";
    }
    if (problem.empty() && (relays_[stream]->attached() || handed_[stream])) problem = "QEMU opened a channel twice";
    if (!problem.empty()) {
      ::close(fd);
      ++rejected_channels_;
      fail(now, problem);
      return true;
    }
    if (is_multifd(stream)) share_->multifd_channels.fetch_add(1, std::memory_order_relaxed);
    if (owns(stream)) {
      attach(stream, fd, now);
      continue;
    }
    // The flow belongs to another worker: its part reads QEMU from now on.
    handed_[stream] = true;
    link_->post(share_->owner(stream), share_.get(),
                [stream, fd](Session& part, uint64_t n) { part.attach_handed(stream, fd, n); },
                [fd] { ::close(fd); });
  }
  return work;
}

bool Session::connect_channels(uint64_t now) {
  // QEMU 7.2 takes the first connection as the main channel, so multifd
  // channels are opened only once the main one is (their data waits in
  // the receive window meanwhile); the format says whether it must.
  bool work = false;
  for (uint16_t s = 0; s < kStreams; ++s) {
    if (!owns(s) || relays_[s]->attached()) continue;
    // The preempt channel is opened right after the main one, before any
    // page comes on it: QEMU 7.2 starts loading only once it has both.
    const bool preempt = s == kPreemptStream;
    if (preempt && !info_.postcopy_preempt && !conn_->receiver(s).drained()) {
      fail(now, "the source sent a postcopy-preempt channel, but this destination was not told to expect one "
                "(postcopy-preempt in the offer or session-prepare; a QEMU without the capability aborts on it)");
      return true;
    }
    if (preempt ? !info_.postcopy_preempt : conn_->receiver(s).drained()) continue;
    if (s > 0 && format_.main_channel_first() && !share_->main_attached.load(std::memory_order_acquire)) break;
    const int fd = qemu::connect_unix(qemu_path_);
    if (fd == -EAGAIN) {
      // QEMU's listen backlog is its channel count and it accepts in its
      // main loop: a burst of connects can find it full. Try again soon,
      // for a while.
      if (connect_busy_since_ == 0) connect_busy_since_ = now;
      if (now - connect_busy_since_ < kConnectPatienceNs) break;
    }
    if (fd < 0) {
      fail(now, "cannot connect to the destination QEMU at " + qemu_path_ + ": " + std::strerror(-fd));
      return true;
    }
    connect_busy_since_ = 0;
    attach(s, fd, now);
    work = true;
  }
  return work;
}

bool Session::all_finished() const {
  // The home part's main channel ends the session; another part is done
  // when its own streams are.
  if (home() && !relays_[0]->attached()) return false;
  for (uint16_t s = 0; s < kStreams; ++s) {
    if (!owns(s)) continue;
    const auto& r = *relays_[s];
    if (r.attached() ? !r.finished() : !conn_->receiver(s).drained()) return false;
    if (!conn_->sender(s).idle()) return false;
  }
  return !home() || others_done();
}

bool Session::others_done() const {
  for (uint16_t w = 0; w < share_->workers(); ++w) {
    if (w == worker_) continue;
    const SessionShare::Part& p = share_->part(w);
    if (p.present.load(std::memory_order_acquire) && !p.done.load(std::memory_order_acquire)) return false;
  }
  return true;
}

uint64_t Session::last_rx_all() const {
  uint64_t last = conn_->last_rx_ns();
  for (uint16_t w = 0; w < share_->workers(); ++w) {
    if (w != worker_) last = std::max(last, share_->part(w).last_rx_ns.load(std::memory_order_relaxed));
  }
  return last;
}

bool Session::heard_any() const {
  if (heard_from_peer_) return true;
  for (uint16_t w = 0; w < share_->workers(); ++w) {
    if (share_->part(w).heard.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void Session::publish_part() {
  SessionShare::Part& me = share_->part(worker_);
  uint16_t backlog = 0;
  for (uint16_t s = 0; s < kStreams; ++s) {
    if (owns(s) && relays_[s]->attached() && conn_->sender(s).has_unsent()) ++backlog;
  }
  me.backlog.store(backlog, std::memory_order_relaxed);
  me.last_rx_ns.store(conn_->last_rx_ns(), std::memory_order_relaxed);
  if (heard_from_peer_) me.heard.store(true, std::memory_order_relaxed);
  me.done.store(is_terminal(info_.state) || all_finished(), std::memory_order_release);
}

void Session::share_pacer() {
  // The session's rate is split over its parts by how many streams each
  // has waiting to be sent (a part with none keeps one share, so a flow
  // that was CPU-bound finds budget when it has packets again).
  if (session_rate_ == 0 || share_->workers() < 2 || !share_->spread()) return;
  uint64_t mine = 0, all = 0;
  for (uint16_t w = 0; w < share_->workers(); ++w) {
    const SessionShare::Part& p = share_->part(w);
    if (!p.present.load(std::memory_order_relaxed)) continue;
    const uint64_t weight = std::max<uint16_t>(1, p.backlog.load(std::memory_order_relaxed));
    all += weight;
    if (w == worker_) mine = weight;
  }
  if (all == 0 || mine == 0) return;
  conn_->retune_bandwidth(std::max<uint64_t>(1, session_rate_ * mine / all));
}

bool Session::poll(uint64_t now, transport::DatagramPort& port) {
  bool work = false;
  now_ = now;
  if (faults_) faults_->expire(now);
  if (!is_terminal(info_.state)) {
    if (info_.role == Role::source) {
      if (home()) work |= accept_channels(now);
    } else if (heard_from_peer_) {
      work |= connect_channels(now);
    }
    const MultifdSource::Gate gate = [this](uint32_t epoch) {
      return MultifdSource::SkipGate{may_skip_unchanged(epoch), filter_channels()};
    };
    MultifdRebuilder::Gate same;
    if (delivered_) same = [this](uint8_t channels, uint32_t epoch) { return same_gate(channels, epoch); };
    const uint32_t ahead = read_ahead();
    for (uint16_t s = 0; s < kStreams && !is_terminal(info_.state); ++s) {
      qemu::ChannelRelay& r = *relays_[s];
      if (!r.attached()) continue;  // (a stream another part owns is never attached here)
      if (sources_[s]) {
        // Warm re-migration: the destination's table first (briefly).
        if (!waiting_for_table(now)) {
          sources_[s]->set_table(share_->table());
          if (!sources_[s]->pump(r, conn_->sender(s), gate, work, ahead)) {
            fail(now, sources_[s]->error());
            return true;
          }
        }
      } else if (r.pump_in(conn_->sender(s), ahead) > 0) {
        work = true;
      }
      if (s == 0 && observer_ && info_.role == Role::source && !channels_frozen_ && observer_->eos_count() >= 1) {
        // QEMU has written every channel's first SYNC before the setup
        // EOS, so all its channels are connected by now: the set is known.
        accept_channels(now);
        channels_frozen_ = true;
        for (uint16_t k = 1; k < kStreams; ++k) {
          if (is_multifd(k) && relays_[k]->attached()) frozen_streams_.push_back(k);
        }
      }
      const uint64_t out_before = r.bytes_to_qemu();
      const bool out_ok =
          rebuilders_[s] ? rebuilders_[s]->pump(conn_->receiver(s), r, same) : r.pump_out(conn_->receiver(s));
      if (!same_error_.empty()) {
        fail(now, channel_name(s) + ": " + same_error_);
        return true;
      }
      if (!out_ok || !r.error().empty()) {
        const std::string why = rebuilders_[s] && !rebuilders_[s]->error().empty() ? rebuilders_[s]->error() : r.error();
        fail(now, channel_name(s) + ": " + why);
        return true;
      }
      if (r.bytes_to_qemu() != out_before) work = true;
    }
    // The main channel's deliveries the streams' epochs have reached, also
    // while no ordered message waits (a stretch of zero pages).
    if (!main_writes_.empty()) drain_main_writes(ordered_epoch());
    if (!is_terminal(info_.state) && home() && !table_chunks_.empty() && heard_from_peer_) work |= send_table();
    if (!is_terminal(info_.state) && home()) {
      if (all_finished()) {
        finish(now, SessionState::completed);
      } else if (relays_[0]->local_fin_queued() && info_.state == SessionState::precopy) {
        info_.state = SessionState::completing;
        state_changed_ = true;
      }
    }
    if (!is_terminal(info_.state) && conn_->nonces_exhausted()) {
      fail(now, "the session used up its AES-GCM nonces (2^32 transmissions on a stream); a new session gets new keys");
    }
    // Liveness is the session's: the newest packet any part heard.
    const bool liveness_applies = info_.role == Role::source || heard_any();
    if (!is_terminal(info_.state) && home() && liveness_applies) {
      const uint64_t last = last_rx_all();
      if (now > last && now - last > cfg_.dead_timeout_ns) {
        fail(now, "no packet from the peer " + info_.peer + " for " +
                      std::to_string(cfg_.dead_timeout_ns / 1'000'000) +
                      " ms (is the destination daemon up and the session prepared?)");
      }
    }
  }
  if (releasing_.any()) work |= drain_releases(now);
  if (conn_) {
    if (share_->workers() > 1) {
      publish_part();
      share_pacer();
    }
    if (conn_->flush(now, port) > 0) work = true;
  }
  return work;
}

bool Session::drain_releases(uint64_t now) {
  bool work = false;
  for (uint16_t k = 1; k < kStreams; ++k) {
    if (!releasing_.test(k)) continue;
    qemu::ChannelRelay& r = *relays_[k];
    // Nothing more once QEMU's socket broke or QEMU stopped reading.
    bool done = !r.error().empty() || now - info_.finished_ns > kReleaseNs;
    if (!done && !release_queued_.test(k)) {
      const std::span<const uint8_t> sync = rebuilders_[k]->release_packet(r);
      if (sync.empty()) {
        done = true;  // not at a packet boundary: QEMU gets EOF there
      } else if (r.out_room() >= sync.size()) {
        const std::span<const uint8_t> parts[] = {sync};
        if (r.write_packet(parts)) {
          release_queued_.set(k);
          ++released_channels_;
          work = true;
        } else {
          done = true;
        }
      }
    }
    if (!done) {
      const uint64_t before = r.bytes_to_qemu();
      if (!r.flush_out()) {
        done = true;
      } else {
        work |= r.bytes_to_qemu() != before;
        done = release_queued_.test(k) && r.channel()->out_empty();
      }
    }
    if (done) {
      r.close();
      releasing_.reset(k);
    }
  }
  return work;
}

uint32_t Session::read_ahead() const {
  // QEMU sizes its last round by how fast its bytes are taken: whatever
  // the daemon holds beyond what the fabric drains soon turns into
  // downtime. A paced session keeps about 10 ms of its rate in flight over
  // all its streams; an unpaced one is bounded by the window alone.
  if (info_.max_bandwidth == 0) return UINT32_MAX;
  const uint64_t streams = 1 + std::max<uint64_t>(multifd_channels_, share_->multifd_channels.load(std::memory_order_relaxed));
  const uint64_t packets = info_.max_bandwidth / 100 / (uint64_t(cfg_.max_payload) * streams);
  return uint32_t(std::clamp<uint64_t>(packets, 8, cfg_.window));
}

uint8_t Session::filter_channels() const {
  if (!info_.pages.unchanged || !observer_ || !channels_frozen_ || late_channels_ > 0) return 0;
  if (observer_->multifd_flushes() > 0 || !observer_->sync_before_each_eos()) return 0;
  // The destination orders streams 1 .. n: the set must be exactly those.
  for (size_t i = 0; i < frozen_streams_.size(); ++i) {
    if (frozen_streams_[i] != i + 1) return 0;
  }
  return uint8_t(frozen_streams_.size());
}

void Session::apply(const MainWrite& w) {
  if (w.unknown) {
    pages::DeliveredTable::delivered_unknown(*w.block, w.page, w.epoch);
  } else {
    pages::DeliveredTable::delivered(*w.block, w.page, w.hash, w.epoch);
  }
}

bool Session::same_gate(uint8_t channels, uint32_t epoch) {
  // A message of epoch e that the source's filter orders is decoded once
  // every ordered stream has rebuilt its e-th SYNC packet and the main
  // channel has given QEMU its e-th RAM EOS: all writes of the earlier
  // epochs are then in the table. The main channel's writes wait in
  // main_writes_ until the streams are in their epoch, so the table sees
  // writes in epoch order (DeliveredTable.hpp). No cycle: the streams'
  // epoch-e packets wait for what the source sent before them, and QEMU
  // takes the main channel up to EOS e once its channels are at SYNC e - 1.
  if (channels == 0 || !delivered_ || epoch == 0) return true;
  if (channels > kMaxMultifdChannels) {
    same_error_ = "MULTIFD_BEGIN orders " + std::to_string(channels) + " multifd channels (at most " +
                  std::to_string(kMaxMultifdChannels) + ")";
    return false;
  }
  if (ordered_channels_ == 0) {
    ordered_channels_ = channels;
  } else if (channels != ordered_channels_) {
    same_error_ = "MULTIFD_BEGIN orders " + std::to_string(channels) + " multifd channels, earlier ones " +
                  std::to_string(ordered_channels_);
    return false;
  }
  if (!observer_) return true;
  if (observer_->eos_count() < epoch) {
    if (!observer_->opaque()) return false;
    // It will see no more EOS markers: nothing orders this epoch, and
    // every SAME from now on is refused (the session fails by name).
    delivered_->distrust("the main channel's RAM section could not be followed to epoch " + std::to_string(epoch) +
                         " (" + observer_->opaque_reason() + ")");
    return true;
  }
  const uint32_t low = ordered_epoch();
  if (low < epoch) return false;
  drain_main_writes(low);
  return true;
}

uint32_t Session::ordered_epoch() const {
  uint32_t low = UINT32_MAX;
  for (uint16_t k = 1; k <= ordered_channels_; ++k) {
    // (Every stream is this part's: the session is not spread when the filter is on.)
    low = std::min(low, rebuilders_[k] ? rebuilders_[k]->epoch() : 0);
  }
  return low;
}

void Session::drain_main_writes(uint32_t low) {
  while (!main_writes_.empty() && main_writes_.front().epoch <= low) {
    apply(main_writes_.front());
    main_writes_.pop_front();
  }
}

bool Session::may_skip_unchanged(uint32_t epoch) const {
  // Skipping a page in epoch e is safe once everything of the epochs
  // before e was seen: the main channel's records (zero pages) up to its
  // e-th RAM EOS, and every multifd channel's packets up to its e-th SYNC
  // (UnchangedFilter.hpp).
  // EOS epochs order the channels only if QEMU syncs them before each EOS.
  if (filter_channels() == 0) return false;
  if (observer_->eos_count() < epoch) return false;
  for (uint16_t k : frozen_streams_) {
    if (!sources_[k] || sources_[k]->epoch() < epoch) return false;
  }
  return true;
}

void Session::cancel(uint64_t now, const std::string& why) {
  if (is_terminal(info_.state)) return;
  info_.error = why;
  if (conn_) conn_->close(wire::CloseReason::cancelled, why);
  finish(now, SessionState::cancelled);
}

void Session::fail(uint64_t now, const std::string& why) {
  if (is_terminal(info_.state)) return;
  info_.error = why;
  if (!home()) {
    // The home part decides for the session (and tells the peer).
    finish(now, SessionState::failed);
    link_->post(share_->home(), share_.get(),
                [w = worker_, why](Session& h, uint64_t n) { h.part_failed(n, w, why); });
    return;
  }
  if (conn_) conn_->close(wire::CloseReason::failed, why);
  finish(now, SessionState::failed);
}

void Session::finish(uint64_t now, SessionState s) {
  info_.state = s;
  info_.finished_ns = now;
  state_changed_ = true;
  qemu_in_ = qemu_bytes_in();
  qemu_out_ = qemu_bytes_out();
  // Closing QEMU's socket is what makes a source QEMU abandon a migration
  // that can no longer complete; its VM keeps running. A destination's
  // multifd channels are ended first (drain_releases).
  const bool release = info_.role == Role::destination && s != SessionState::completed;
  for (uint16_t k = 0; k < relays_.size(); ++k) {
    if (release && k > 0 && rebuilders_[k] && relays_[k]->attached()) {
      releasing_.set(k);
    } else {
      relays_[k]->close();
    }
  }
  for (int fd : unclassified_) ::close(fd);
  unclassified_.clear();
  listener_.close();
  if (faults_) faults_->finish();
  // Every page this part's flows sent is logged by now: the captures go to
  // the control plane at once (the image is ready before the linger ends).
  hand_in_captures();
  if (conn_) conn_->set_keepalive(false);
  if (!home() || !link_) return;
  for (uint16_t w = 0; w < share_->workers(); ++w) {
    if (w == worker_ || !share_->part(w).present.load(std::memory_order_acquire)) continue;
    link_->post(w, share_.get(), [s, why = info_.error](Session& part, uint64_t n) { part.end(n, s, why); });
  }
}

void Session::release_transport() {
  final_counters_ = info().counters;
  hand_in_captures();
  conn_.reset();
  // Rebuilders are referenced by the relays, the filter by the sources:
  // relays first.
  releasing_.reset();
  for (auto& r : relays_) r = std::make_unique<qemu::ChannelRelay>(0);
  for (auto& s : sources_) s.reset();
  for (auto& rb : rebuilders_) rb.reset();
  observer_.reset();
  main_sink_.reset();
  return_path_.reset();
  preempt_observer_.reset();
  filter_ = pages::UnchangedFilter();
  main_writes_.clear();
  delivered_.reset();
}

bool Session::lingering_done(uint64_t now) const {
  return conn_ && is_terminal(info_.state) && now > info_.finished_ns &&
         now - info_.finished_ns > cfg_.dead_timeout_ns;
}

uint64_t Session::pages() const {
  if (!conn_) return final_counters_.pages.pages;
  uint64_t n = 0;
  for (const auto& src : sources_) {
    if (src) n += src->stats().pages;
  }
  for (const auto& rb : rebuilders_) {
    if (rb) n += rb->stats().pages;
  }
  return n;
}

uint64_t Session::qemu_bytes_in() const {
  uint64_t n = 0;
  for (const auto& r : relays_) n += r->bytes_from_qemu();
  return n;
}

uint64_t Session::qemu_bytes_out() const {
  uint64_t n = 0;
  for (const auto& r : relays_) n += r->bytes_to_qemu();
  return n;
}

SessionInfo Session::info() const {
  SessionInfo i = info_;
  SessionCounters& c = i.counters;
  c.qemu_bytes_in = is_terminal(info_.state) ? qemu_in_ : qemu_bytes_in();
  c.qemu_bytes_out = is_terminal(info_.state) ? qemu_out_ : qemu_bytes_out();
  c.rejected_channels = rejected_channels_;
  c.multifd_channels = multifd_channels_;
  for (const auto& src : sources_) {
    if (!src) continue;
    c.pages += src->stats();
    if (src->passthrough()) ++c.passthrough_channels;
  }
  for (const auto& rb : rebuilders_) {
    if (!rb) continue;
    c.pages += rb->stats();
    c.empty_packets_dropped += rb->dropped_empty();
  }
  if (observer_) {
    c.main_eos = observer_->eos_count();
    c.main_zero_records = observer_->zero_records();
    c.main_page_records = observer_->page_records();
  }
  c.late_channels = late_channels_;
  c.released_channels = released_channels_;
  c.store_pages = handed_store_.store_pages;
  c.store_pages_without_bytes = handed_store_.store_pages_without_bytes;
  c.store_bytes = handed_store_.store_bytes;
  add_store_counts(captures_, c);
  c.preempt_bytes = relays_[kPreemptStream]->bytes_from_qemu() + relays_[kPreemptStream]->bytes_to_qemu();
  if (faults_) c.faults = faults_->stats();
  if (return_path_ && return_path_->opaque() && i.fault_note.empty()) {
    i.fault_note = "return path not parsed from here on: " + return_path_->opaque_reason();
  }

  if (conn_) {
    c.conn = conn_->stats();
    for (uint16_t s = 0; s < conn_->streams(); ++s) {
      c.tx += conn_->sender(s).stats();
      c.rx += conn_->receiver(s).stats();
    }
  } else {
    c = final_counters_;
  }
  const bool main = home() && info_.started_ns != 0;
  i.parts = {PartInfo{worker_, uint16_t(c.multifd_channels + (main ? 1 : 0)), c.pages.pages}};
  return i;
}

void SessionInfo::merge(const SessionInfo& part) {
  released = released && part.released;
  SessionCounters& c = counters;
  const SessionCounters& o = part.counters;
  c.qemu_bytes_in += o.qemu_bytes_in;
  c.qemu_bytes_out += o.qemu_bytes_out;
  c.conn += o.conn;
  c.tx += o.tx;
  c.rx += o.rx;
  c.rejected_channels += o.rejected_channels;
  c.multifd_channels += o.multifd_channels;
  c.pages += o.pages;
  c.passthrough_channels += o.passthrough_channels;
  c.empty_packets_dropped += o.empty_packets_dropped;
  c.released_channels += o.released_channels;
  c.store_pages += o.store_pages;
  c.store_pages_without_bytes += o.store_pages_without_bytes;
  c.store_bytes += o.store_bytes;
  c.preempt_bytes += o.preempt_bytes;
  c.faults.merge(o.faults);
  parts.insert(parts.end(), part.parts.begin(), part.parts.end());
  if (error.empty() && !part.error.empty()) error = part.error;
}

}  // namespace mm::engine
