// One migration session as the worker lcore sees it: its transport
// connection, its QEMU channels, its state and counters. Only the worker
// that owns it touches it; the control plane gets SessionInfo snapshots.
#pragma once

#include <bitset>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/engine/FaultClock.hpp"
#include "dataplane/engine/PageChannels.hpp"
#include "dataplane/engine/SessionShare.hpp"
#include "dataplane/pages/DeliveredTable.hpp"
#include "dataplane/pages/PagePipeline.hpp"
#include "dataplane/pages/UnchangedFilter.hpp"
#include "dataplane/qemu/ChannelClassifier.hpp"
#include "dataplane/qemu/ChannelRelay.hpp"
#include "dataplane/qemu/MainChannelObserver.hpp"
#include "dataplane/qemu/ReturnPath.hpp"
#include "dataplane/qemu/UnixSocket.hpp"
#include "dataplane/store/Capture.hpp"
#include "dataplane/transport/Connection.hpp"
#include "dataplane/wire/AuthTag.hpp"
#include "dataplane/wire/Mmp.hpp"
#include "dataplane/wire/PacketCipher.hpp"

namespace mm::engine {

// Largest message a session's stream carries (a page message, a main-channel
// chunk); the transport's window must hold one (window x payload).
inline constexpr size_t kMaxMessage = 1 << 20;

enum class Role { source, destination };
// The dataplane's part of the session state machine;
// the control plane adds negotiating and postcopy, which it sees from QMP.
// completing: the local QEMU has closed its side (everything it had to say
// is queued); the session completes once the peer has all of it and has
// closed its side too.
enum class SessionState { prepared, precopy, completing, completed, failed, cancelled };
const char* to_string(Role r);
const char* to_string(SessionState s);
inline bool is_terminal(SessionState s) {
  return s == SessionState::completed || s == SessionState::failed ||
         s == SessionState::cancelled;
}

struct SessionCounters {
  uint64_t qemu_bytes_in = 0;   // read from the local QEMU
  uint64_t qemu_bytes_out = 0;  // written to the local QEMU
  transport::ConnectionStats conn;
  transport::SenderStats tx;       // summed over streams
  transport::ReceiverStats rx;
  uint64_t rejected_channels = 0;  // QEMU connections refused (unknown kind, duplicates)
  uint64_t multifd_channels = 0;   // multifd channels relayed
  // Page pipeline (multifd channels): the source's encoders or the
  // destination's decoders, summed.
  pages::PageStats pages;
  uint64_t passthrough_channels = 0;  // QEMU compressed them itself: relayed as bytes
  // Destination: packets without pages and not a SYNC (all pages
  // unchanged, or QEMU sent it empty), not written to QEMU.
  uint64_t empty_packets_dropped = 0;
  // Destination, after a failure: multifd channels ended with an empty
  // SYNC packet so that QEMU does not wait at a sync point for ever.
  uint64_t released_channels = 0;
  // The source's view of the main channel's RAM section.
  uint64_t main_eos = 0;           // RAM EOS markers (epochs)
  uint64_t main_zero_records = 0;  // zero pages QEMU sent on the main channel
  uint64_t main_page_records = 0;  // raw pages QEMU sent on the main channel
  uint64_t late_channels = 0;      // multifd channels that appeared after setup
  // Source with a page store: pages logged for the VM's image, ... of them
  // without their bytes (over the store's budget, or written by the main
  // channel as raw pages), the store budget the captures hold.
  uint64_t store_pages = 0;
  uint64_t store_pages_without_bytes = 0;
  uint64_t store_bytes = 0;
  // QEMU's postcopy-preempt channel (stream 17): bytes relayed, and at the
  // destination the page requests timed until their page came on it.
  uint64_t preempt_bytes = 0;
  FaultStats faults;
};

// One worker's part of a session: which worker, how many of the session's
// QEMU channels it carries and the pages its flows handled.
struct PartInfo {
  uint16_t worker = 0;
  uint16_t channels = 0;  // QEMU connections attached to it (main + multifd)
  uint64_t pages = 0;
};

struct SessionInfo {
  uint32_t id = 0;
  // The part this snapshot is of: the home part (the coordinator; the
  // state below is the session's) or one holding other streams. merge()
  // adds the others' counters into the home's.
  bool home = true;
  std::vector<PartInfo> parts;
  Role role = Role::source;
  SessionState state = SessionState::prepared;
  std::string error;
  std::string qemu_uri;  // source: where QEMU migrates to; destination: QEMU's -incoming
  std::string peer;      // fabric address of the peer, once known
  uint64_t max_bandwidth = 0;
  bool authenticated = false;  // MMP packets carry the session key's tag
  bool encrypted = false;      // MMP packets are AES-256-GCM records (MMP.md "Encryption")
  const char* cipher = "";     // ... computed by this engine ("ipsec-mb", "openssl"; "" in the clear)
  pages::PagePolicy pages;     // source: what the page pipeline does
  std::string vm;              // the VM's identity for the page store ("": none)
  std::string store_note;      // source: what the destination's image gave
  // Source: why the unchanged filter is (or went) off, if it is; and where
  // the main-channel parser stopped reading RAM records.
  std::string unchanged_note;
  std::string main_channel_note;
  // QEMU's postcopy-preempt channel is expected (both QEMUs have the
  // capability); destination: why page requests are not timed, if they
  // are not.
  bool postcopy_preempt = false;
  std::string fault_note;
  uint64_t created_ns = 0, started_ns = 0, finished_ns = 0;
  // Its transport, buffers and page state are freed (after the linger);
  // merged: every part's are.
  bool released = false;
  SessionCounters counters;

  // Adds another part's counters and PartInfo to this (the home's) snapshot;
  // its error becomes the session's if the home has none.
  void merge(const SessionInfo& part);
};

struct SessionParams {
  uint32_t id = 0;
  Role role = Role::source;
  std::string qemu_uri;
  transport::PeerAddress peer;  // source: the destination's fabric address
  uint16_t peer_udp_port = 0;   // destination: the source's base UDP port
  uint64_t max_bandwidth = 0;   // pacer for what this side sends, wire bytes/s (0: none)
  std::optional<wire::AuthSecret> auth;  // from the peer channel's session key
  // Encryption keys from the peer channel's handshake; with them the GCM
  // tag authenticates every packet and `auth` is not used.
  std::optional<wire::SessionKeys> keys;
  pages::PagePolicy pages;                // source: page pipeline policy
  // The peer's queue count: stream s goes to its UDP port base +
  // wire::stream_queue(id, s, peer_queues) (peer.udp_port / peer_udp_port
  // are then its base port). 0 or 1: every stream to that one port.
  uint16_t peer_queues = 0;
  // The VM's identity, and (source, page store on) where every part hands
  // the captures of its flows when it ends.
  std::string vm;
  std::shared_ptr<store::CaptureBin> capture;
  // Warm re-migration. Destination: this host's image of the VM (its page
  // table goes to the source first; PAGE_STORED pages come from it).
  // Source: the destination said it holds one, so its table will come;
  // `image` is then this host's own image of the VM, if any (pages changed
  // since go as deltas against the version both images hold).
  std::shared_ptr<const store::Image> image;
  bool table_expected = false;
  // Postcopy with QEMU's postcopy-preempt capability on both QEMUs. Source:
  // a connection that stays silent once the main channel is attached is the
  // preempt channel. Destination: it is opened to QEMU right after the
  // main channel (QEMU 7.2 starts loading only once it has both; a QEMU
  // without the capability aborts on a second connection, so it is never
  // opened unless asked for).
  bool postcopy_preempt = false;
};

// Whether a session's streams may be spread over the workers: not when the
// unchanged filter is on (the source's filter and the destination's record
// of what it delivered are read and written by every multifd channel: each
// needs one owner).
bool spreads(const SessionParams& p);

class Session;
// How a part reaches the parts of its session on other workers: a task
// for that worker's loop (the Engine's task ring), never a shared lock.
// Cold path only: channel hand-over, failures, the end of the session.
class PartLink {
 public:
  virtual ~PartLink() = default;
  // Runs fn(part, now) on worker's loop if it still has the part of the
  // session `share` belongs to; else if_gone (there, or here when the
  // worker's ring is full).
  virtual void post(uint16_t worker, const SessionShare* share,
                    std::function<void(Session&, uint64_t)> fn, std::function<void()> if_gone = {}) = 0;
};

class Session {
 public:
  // QEMU allows up to 255 multifd channels; a session relays up to 16, each
  // on its own stream (stream 0 is the main channel).
  static constexpr uint16_t kMaxMultifdChannels = 16;
  // ... and stream 17 (wire::kPreemptStream) is QEMU's postcopy-preempt
  // channel, sent ahead of the others.
  static constexpr uint16_t kPreemptStream = wire::kPreemptStream;
  static constexpr uint16_t kStreams = kPreemptStream + 1;
  static_assert(kPreemptStream == 1 + kMaxMultifdChannels);
  static bool is_multifd(uint16_t stream) { return stream > 0 && stream < kPreemptStream; }

  // Throws std::invalid_argument / std::runtime_error on a bad URI or a
  // socket that cannot be opened: the control plane reports it.
  // codecs: the worker's (outlives the session). share, worker, link: the
  // session's parts on all workers, this one's worker, how to reach the
  // others; without a share the session is one part holding every stream.
  Session(const SessionParams& p, const transport::TransportConfig& cfg, uint64_t now,
          CodecSet* codecs = nullptr, std::shared_ptr<SessionShare> share = {}, uint16_t worker = 0,
          PartLink* link = nullptr);
  ~Session();

  uint32_t id() const { return info_.id; }
  bool home() const { return worker_ == share_->home(); }
  bool owns(uint16_t stream) const { return share_->owner(stream) == worker_; }
  const SessionShare* share() const { return share_.get(); }
  SessionState state() const { return info_.state; }
  transport::Connection* connection() { return conn_.get(); }

  // A valid packet of this session from `from`. Returns false (and counts)
  // when it breaks the protocol: the session then fails.
  void on_packet(const wire::Header& h, std::span<const uint8_t> payload,
                 const transport::PeerAddress& from, uint64_t now);
  // Moves bytes between QEMU and the streams and sends what is due; returns
  // whether it did any work (for the idle policy).
  bool poll(uint64_t now, transport::DatagramPort& port);

  void cancel(uint64_t now, const std::string& why);
  // True once a terminal session no longer needs its transport (the peer
  // had time to hear our last ACKs); the engine then frees its buffers.
  bool lingering_done(uint64_t now) const;
  // Frees everything a finished session held: transport buffers, QEMU
  // channel buffers, the page pipeline (dictionaries: up to 64 MiB per
  // stream). Only the SessionInfo stays, for queries.
  void release_transport();

  SessionInfo info() const;
  // Pages this part's flows took apart or rebuilt so far.
  uint64_t pages() const;
  uint64_t qemu_bytes_in() const;
  uint64_t qemu_bytes_out() const;
  // The state changed since the last call (for events).
  bool take_state_change() {
    const bool c = state_changed_;
    state_changed_ = false;
    return c && home();
  }

  // Another worker's part: the home hands it a QEMU channel it accepted
  // (source), or tells it the session ended; a part tells the home it
  // failed or heard the peer close.
  void attach_handed(uint16_t stream, int fd, uint64_t now);
  void end(uint64_t now, SessionState s, const std::string& why);
  void part_failed(uint64_t now, uint16_t worker, const std::string& why);
  void peer_closed(uint64_t now, wire::CloseReason reason, const std::string& text);

 private:
  void fail(uint64_t now, const std::string& why);
  bool accept_channels(uint64_t now);
  bool connect_channels(uint64_t now);
  bool all_finished() const;
  void attach(uint16_t stream, int fd, uint64_t now);
  void finish(uint64_t now, SessionState s);
  // Destination, after a failure: ends the multifd channels toward QEMU
  // with an empty SYNC packet each, behind what they had queued, then
  // closes them (QEMU-7.2-STREAM.md, "A channel that ends at a sync point").
  bool drain_releases(uint64_t now);
  bool may_skip_unchanged(uint32_t epoch) const;
  // Source: the multifd channels its unchanged filter orders, streams
  // 1 .. n (MULTIFD_BEGIN's `channels`); 0: the filter is off.
  uint8_t filter_channels() const;
  // Destination, the source's filter on: whether a page message of this
  // epoch whose MULTIFD_BEGIN orders `channels` may be decoded now.
  bool same_gate(uint8_t channels, uint32_t epoch);
  struct MainWrite {
    pages::DeliveredTable::Block* block;
    uint64_t page;
    uint32_t epoch;
    uint64_t hash;
    bool unknown;
  };
  void apply(const MainWrite& w);
  // The lowest epoch of the streams the source orders; enters the main
  // channel's deliveries of epochs up to `low`.
  uint32_t ordered_epoch() const;
  void drain_main_writes(uint32_t low);
  // Home, source: why the captures cannot make an image of the VM's
  // memory ("": they can: every write QEMU made was seen, in epochs).
  std::string capture_gap() const;
  // Hands this part's captures to the bin (once).
  void hand_in_captures();
  // Destination home: queues the image's page table on stream 0 (as the
  // window allows). Source home: one STORE_TABLE chunk from the peer.
  bool send_table();
  std::string on_table_chunk(std::span<const uint8_t> body);
  // Source: whether flows must wait for the destination's table (it is
  // expected and has not come; they wait at most kTableWaitNs).
  bool waiting_for_table(uint64_t now) const;
  static constexpr uint64_t kTableWaitNs = 2'000'000'000;
  static constexpr uint32_t kHeldMessages = 16;
  uint32_t read_ahead() const;
  // Home: the newest packet from the peer over all parts; whether any
  // part has heard from it; whether every other part is done.
  uint64_t last_rx_all() const;
  bool heard_any() const;
  bool others_done() const;
  // This part's slot in the share, and the pacer's share of the session
  // rate (source, parts on several workers): by the parts' backlogs.
  void publish_part();
  void share_pacer();
  // "main channel", "multifd channel k", "preempt channel": for errors.
  static std::string channel_name(uint16_t stream);
  struct MainSink;
  struct FaultSink;

  SessionInfo info_;
  // The QEMU stream format both QEMUs speak (one built: 7.2).
  const qemu::StreamFormat& format_ = qemu::qemu_7_2();
  std::shared_ptr<SessionShare> share_;
  uint16_t worker_ = 0;
  PartLink* link_ = nullptr;
  std::bitset<kStreams> handed_;  // source home: streams handed to another worker's part
  uint64_t session_rate_ = 0;     // max_bandwidth of the whole session
  transport::TransportConfig cfg_;
  std::unique_ptr<transport::Connection> conn_;
  qemu::UnixListener listener_;  // source only
  std::string qemu_path_;
  // Stream 0: the main channel; stream 1 + k: multifd channel k.
  std::vector<std::unique_ptr<qemu::ChannelRelay>> relays_;
  std::vector<int> unclassified_;  // source: accepted, first bytes not seen yet
  uint16_t peer_udp_port_ = 0;
  bool heard_from_peer_ = false;
  bool state_changed_ = true;
  uint64_t rejected_channels_ = 0;
  uint16_t multifd_channels_ = 0;
  uint64_t connect_busy_since_ = 0;  // destination QEMU's backlog was full
  uint64_t qemu_in_ = 0, qemu_out_ = 0;  // kept after the relay closes
  SessionCounters final_counters_;       // kept after the transport is freed

  // Page pipeline. Source: one MultifdSource per multifd stream, the
  // unchanged filter they share, and the main-channel observer that tells
  // it about pages written by other paths. Destination: one rebuilder per
  // multifd stream.
  CodecSet* codecs_ = nullptr;
  pages::PageCodec* codec_ = nullptr;
  pages::PageCodec* heavy_codec_ = nullptr;  // auto codec: zstd for link-bound flows
  pages::UnchangedFilter filter_;
  std::vector<std::unique_ptr<MultifdSource>> sources_;
  std::vector<std::unique_ptr<MultifdRebuilder>> rebuilders_;
  std::unique_ptr<MainSink> main_sink_;
  // Destination, the source's filter on: what this session delivered, the
  // main channel's writes not yet entered, the channels the source orders.
  std::unique_ptr<pages::DeliveredTable> delivered_;
  std::deque<MainWrite> main_writes_;
  uint8_t ordered_channels_ = 0;
  std::string same_error_;
  // Page store captures by stream (stream 0: the main channel's zero pages).
  std::shared_ptr<store::CaptureBin> bin_;
  std::vector<std::unique_ptr<store::Capture>> captures_;
  SessionCounters handed_store_;  // store_* of the captures already handed in
  std::shared_ptr<const store::Image> image_;          // this host's image of the VM (see SessionParams::image)
  std::vector<std::vector<uint8_t>> table_chunks_;     // ... its table, still to be queued
  size_t table_next_ = 0;
  std::unique_ptr<store::PageTable> table_in_;         // source home: the table being received
  std::unique_ptr<qemu::MainChannelObserver> observer_;
  bool channels_frozen_ = false;  // the multifd channel set is known (after setup)
  std::vector<uint16_t> frozen_streams_;
  uint64_t late_channels_ = 0;
  std::bitset<kStreams> releasing_;       // destination, failed: channels being ended
  std::bitset<kStreams> release_queued_;  // ... whose empty SYNC is queued
  uint64_t released_channels_ = 0;
  // Destination, postcopy: the return path's page requests, the preempt
  // channel's pages, and the clock between them (home part).
  std::unique_ptr<FaultSink> fault_sink_;
  std::unique_ptr<qemu::ReturnPathObserver> return_path_;
  std::unique_ptr<qemu::MainChannelObserver> preempt_observer_;
  std::unique_ptr<FaultClock> faults_;
  uint64_t now_ = 0;  // the current poll's time, for the observers' callbacks
  // How long a failed session keeps writing its release to a QEMU that
  // does not read.
  static constexpr uint64_t kReleaseNs = 5'000'000'000;
};

}  // namespace mm::engine
