#include "control/SessionJson.hpp"

#include <arpa/inet.h>

#include <cstdio>
#include <stdexcept>

namespace mm::control {

using nlohmann::json;

json to_json(const engine::SessionInfo& s) {
  const auto& c = s.counters;
  auto ms = [](uint64_t from, uint64_t to) -> json {
    if (from == 0 || to == 0) return nullptr;
    return double(to - from) / 1e6;
  };
  json j = {
      {"session", s.id},
      {"role", engine::to_string(s.role)},
      {"state", engine::to_string(s.state)},
      {"qemu-uri", s.qemu_uri},
      {"peer", s.peer},
      {"max-bandwidth", s.max_bandwidth},
      {"authenticated", s.authenticated},
      {"encrypted", s.encrypted},
      {"cipher", s.cipher},
      {"released", s.released},
      {"duration-ms", ms(s.started_ns, s.finished_ns)},
      {"counters",
       {
           {"qemu_bytes_in", c.qemu_bytes_in},
           {"qemu_bytes_out", c.qemu_bytes_out},
           {"wire_bytes_tx", c.conn.wire_bytes_tx},
           {"wire_bytes_rx", c.conn.wire_bytes_rx},
           {"packets_tx", c.conn.packets_tx},
           {"packets_rx", c.conn.packets_rx},
           {"data_packets_tx", c.tx.packets},
           {"payload_bytes_tx", c.tx.payload_bytes},
           {"retransmits", c.tx.retransmits},
           {"fast_retransmits", c.tx.fast_retransmits},
           {"rto_events", c.tx.rto_events},
           {"tail_probes", c.tx.tail_probes},
           {"spurious_timeouts", c.tx.spurious_timeouts},
           {"window_reductions", c.tx.window_reductions},
           {"stale_acks_rx", c.tx.stale_acks},
           {"acks_rx", c.tx.acks_in},
           {"data_packets_rx", c.rx.packets},
           {"payload_bytes_rx", c.rx.payload_bytes},
           {"duplicates_rx", c.rx.duplicates},
           {"out_of_order_rx", c.rx.out_of_order},
           {"out_of_window_rx", c.rx.out_of_window},
           {"messages_rx", c.rx.messages},
           {"messages_in_place_rx", c.rx.messages_in_place},
           {"acks_tx", c.rx.acks_out},
           {"probes_tx", c.conn.probes_tx},
           {"probes_rx", c.conn.probes_rx},
           {"bad_stream_rx", c.conn.bad_stream},
           {"bad_ack_rx", c.conn.bad_ack},
           {"bad_tag_rx", c.conn.rx_bad_tag},
           {"replayed_rx", c.conn.rx_replayed},
           {"sealed_in_frame_tx", c.tx.sealed_in_frame},
           {"rejected_channels", c.rejected_channels},
           {"multifd_channels", c.multifd_channels},
           {"multifd_packets", c.pages.packets},
           {"multifd_sync_packets", c.pages.sync_packets},
           {"pages_in", c.pages.pages},
           {"pages_zero", c.pages.zero},
           {"pages_unchanged", c.pages.unchanged},
           {"pages_unchanged_held", c.pages.unchanged_held},
           {"pages_unchanged_refused", c.pages.unchanged_refused},
           {"pages_dedupe_hits", c.pages.dedupe_hits},
           {"pages_auto_zstd_packets", c.pages.auto_heavy_packets},
           {"pages_auto_switches", c.pages.auto_switches},
           {"pages_stored", c.pages.stored},
           {"pages_unchanged_conflicts", c.pages.unchanged_conflicts},
           {"pages_stored_refused", c.pages.stored_refused},
           {"pages_delta", c.pages.delta},
           {"pages_delta_bytes", c.pages.delta_bytes},
           {"pages_delta_bases", c.pages.delta_bases},
           {"pages_delta_image", c.pages.delta_image},
           {"pages_compressed", c.pages.compressed},
           {"pages_compressed_bytes", c.pages.compressed_bytes},
           {"pages_raw", c.pages.raw},
           {"page_record_bytes", c.pages.record_bytes},
           {"pages_verified", c.pages.verified},
           {"pages_written", c.pages.written},
           {"passthrough_channels", c.passthrough_channels},
           {"empty_packets_dropped", c.empty_packets_dropped},
           {"released_channels", c.released_channels},
           {"main_eos", c.main_eos},
           {"main_zero_records", c.main_zero_records},
           {"main_page_records", c.main_page_records},
           {"late_channels", c.late_channels},
           {"store_pages", c.store_pages},
           {"store_pages_without_bytes", c.store_pages_without_bytes},
           {"store_bytes", c.store_bytes},
           {"preempt_bytes", c.preempt_bytes},
           {"fault_requests", c.faults.requests},
           {"fault_answered", c.faults.answered},
           {"fault_unmatched", c.faults.unmatched},
           {"fault_dropped", c.faults.dropped},
       }},
  };
  j["postcopy-preempt"] = s.postcopy_preempt;
  if (s.role == engine::Role::destination && (c.faults.requests > 0 || s.postcopy_preempt)) {
    // Destination, postcopy: each page request timed from the return path
    // until its page came on the preempt channel (engine/FaultClock.hpp).
    const auto& h = c.faults.latency;
    auto us = [](uint64_t ns) { return double(ns) / 1e3; };
    j["faults"] = {{"requests", c.faults.requests},
                   {"timed", h.count()},
                   {"p50-us", us(h.quantile_ns(0.5))},
                   {"p99-us", us(h.quantile_ns(0.99))},
                   {"max-us", us(h.max_ns())},
                   {"mean-us", h.count() ? us(h.sum_ns() / h.count()) : 0.0},
                   {"unmatched", c.faults.unmatched},
                   {"dropped", c.faults.dropped}};
    if (!s.fault_note.empty()) j["faults"]["note"] = s.fault_note;
    if (!s.postcopy_preempt && c.faults.requests > 0) {
      j["faults"]["note"] = "not timed: without the postcopy-preempt channel the answers come on the main channel";
    }
  }
  if (!s.vm.empty()) j["vm"] = s.vm;
  if (!s.store_note.empty()) j["store-note"] = s.store_note;
  if (s.role == engine::Role::source) {
    j["pages"] = to_json(s.pages);
    // The delta's base cache is the dictionary: this much per stream end.
    j["pages"]["delta-base-bytes-per-stream"] = s.pages.delta && s.pages.dedupe ? uint64_t(s.pages.dedupe_slots) * 4096 : 0;
    if (!s.unchanged_note.empty()) j["pages"]["unchanged-note"] = s.unchanged_note;
    if (!s.main_channel_note.empty()) j["pages"]["main-channel-note"] = s.main_channel_note;
  }
  json parts = json::array();
  for (const auto& part : s.parts) {
    parts.push_back({{"worker", part.worker}, {"channels", part.channels}, {"pages", part.pages}});
  }
  j["workers"] = parts;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

std::string session_summary(const engine::SessionInfo& s) {
  const auto& c = s.counters;
  const double mib = 1024.0 * 1024.0;
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line, "  session %u: %.1f MiB from QEMU, %.1f MiB to QEMU, %.1f MiB on the wire, "
                "%llu retransmits, %.0f ms\n",
                s.id, double(c.qemu_bytes_in) / mib, double(c.qemu_bytes_out) / mib,
                double(c.conn.wire_bytes_tx) / mib, static_cast<unsigned long long>(c.tx.retransmits),
                s.started_ns && s.finished_ns ? double(s.finished_ns - s.started_ns) / 1e6 : 0.0);
  out += line;
  const auto& p = c.pages;
  if (p.pages > 0) {
    std::snprintf(line, sizeof line, "  pages: %llu in %llu multifd packets: zero %llu, unchanged %llu, dedupe %llu, "
                  "compressed %llu (%.1f MiB), raw %llu; %s %llu\n",
                  static_cast<unsigned long long>(p.pages), static_cast<unsigned long long>(p.packets),
                  static_cast<unsigned long long>(p.zero), static_cast<unsigned long long>(p.unchanged),
                  static_cast<unsigned long long>(p.dedupe_hits), static_cast<unsigned long long>(p.compressed),
                  double(p.compressed_bytes) / mib, static_cast<unsigned long long>(p.raw),
                  s.role == engine::Role::source ? "held back by the epoch gate" : "verified",
                  static_cast<unsigned long long>(s.role == engine::Role::source ? p.unchanged_held : p.verified));
    out += line;
    if (p.delta_bases > 0 || p.delta > 0) {
      if (s.role == engine::Role::source) {
        std::snprintf(line, sizeof line, "  delta: %llu pages in %.1f MiB of changes; %llu found a base in the dictionary\n",
                      static_cast<unsigned long long>(p.delta), double(p.delta_bytes) / mib,
                      static_cast<unsigned long long>(p.delta_bases));
      } else {
        std::snprintf(line, sizeof line, "  delta: %llu pages rebuilt from %.1f MiB of changes\n",
                      static_cast<unsigned long long>(p.delta), double(p.delta_bytes) / mib);
      }
      out += line;
    }
    if (s.role == engine::Role::source && s.pages.auto_codec) {
      std::snprintf(line, sizeof line, "  auto codec: %llu of %llu packets in zstd (the link held the flow), %llu switches\n",
                    static_cast<unsigned long long>(p.auto_heavy_packets), static_cast<unsigned long long>(p.packets),
                    static_cast<unsigned long long>(p.auto_switches));
      out += line;
    }
  }
  if (s.role == engine::Role::source && c.main_eos > 0) {
    std::snprintf(line, sizeof line, "  main channel: %llu RAM epochs, %llu zero pages, %llu raw pages%s%s\n",
                  static_cast<unsigned long long>(c.main_eos), static_cast<unsigned long long>(c.main_zero_records),
                  static_cast<unsigned long long>(c.main_page_records),
                  s.main_channel_note.empty() ? "" : "; parsed until ", s.main_channel_note.c_str());
    out += line;
  }
  if (s.role == engine::Role::destination && c.faults.requests > 0) {
    const auto& h = c.faults.latency;
    if (h.count() > 0) {
      std::snprintf(line, sizeof line,
                    "  postcopy faults: %llu requests, %llu timed on the preempt channel: p50 %.0f us, p99 %.0f us, "
                    "max %.0f us; %llu answered elsewhere\n",
                    static_cast<unsigned long long>(c.faults.requests), static_cast<unsigned long long>(h.count()),
                    double(h.quantile_ns(0.5)) / 1e3, double(h.quantile_ns(0.99)) / 1e3, double(h.max_ns()) / 1e3,
                    static_cast<unsigned long long>(c.faults.unmatched));
    } else {
      std::snprintf(line, sizeof line, "  postcopy faults: %llu requests, none timed (%s)\n",
                    static_cast<unsigned long long>(c.faults.requests),
                    s.postcopy_preempt ? "no page came on the preempt channel" : "no postcopy-preempt channel");
    }
    out += line;
  }
  return out;
}

json to_json(const pages::PagePolicy& p) {
  const std::string codec = p.codec == pages::CodecKind::raw ? std::string("none") : std::string(pages::to_string(p.codec));
  return {{"codec", p.auto_codec ? (p.codec == pages::CodecKind::lz4 ? std::string("auto") : "auto:" + codec) : codec},
          {"zero", p.zero},
          {"unchanged", p.unchanged},
          {"dedupe", p.dedupe},
          {"dedupe-slots", p.dedupe_slots},
          {"delta", p.delta && p.dedupe}};
}

pages::PagePolicy page_policy_from_json(const json& j) {
  if (!j.is_object()) throw std::invalid_argument("'pages' must be an object");
  pages::PagePolicy p;
  for (auto& [k, v] : j.items()) {
    if (k == "codec") {
      // "auto": LZ4 where the CPU holds a flow back, zstd where the link
      // does (decided per flow from what it measures); a named codec: that
      // one always.
      const std::string c = v.is_string() ? v.get<std::string>() : "";
      p.auto_codec = c == "auto";
      if (c == "lz4" || c == "auto") p.codec = pages::CodecKind::lz4;
      else if (c == "zstd") p.codec = pages::CodecKind::zstd;
      else if (c == "deflate") p.codec = pages::CodecKind::deflate;
      else if (c == "none" || c == "raw") p.codec = pages::CodecKind::raw;
      else throw std::invalid_argument("pages.codec must be one of auto, lz4, zstd, deflate, none");
    } else if (k == "zero" || k == "unchanged" || k == "dedupe" || k == "delta") {
      if (!v.is_boolean()) throw std::invalid_argument("pages." + k + " must be true or false");
      (k == "zero" ? p.zero : k == "unchanged" ? p.unchanged : k == "dedupe" ? p.dedupe : p.delta) = v.get<bool>();
    } else if (k == "dedupe-slots") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > pages::kMaxDedupeSlots) {
        throw std::invalid_argument("pages.dedupe-slots must be 1.." + std::to_string(pages::kMaxDedupeSlots));
      }
      p.dedupe_slots = v.get<uint32_t>();
    } else {
      throw std::invalid_argument("unknown pages member '" + k +
                                  "' (codec, zero, unchanged, dedupe, dedupe-slots, delta)");
    }
  }
  return p;
}

json to_json(const engine::EngineStats& s) {
  json invalid = json::object();
  for (size_t e = 1; e < size_t(wire::DecodeError::count_); ++e) {
    invalid[std::string(wire::to_string(wire::DecodeError(e)))] = s.rx_invalid[e].load();
  }
  return {
      {"loops", s.loops.load()},
      {"idle_sleeps", s.idle_sleeps.load()},
      {"rx_datagrams", s.rx_datagrams.load()},
      {"rx_invalid", invalid},
      {"rx_unknown_session", s.rx_unknown_session.load()},
      {"rx_bad_auth", s.rx_bad_auth.load()},
      {"rx_bad_tag", s.rx_bad_tag.load()},
      {"rx_replayed", s.rx_replayed.load()},
      {"rx_wrong_peer", s.rx_wrong_peer.load()},
      {"rx_late", s.rx_late.load()},
      {"rx_handoff_out", s.rx_handoff_out.load()},
      {"rx_handoff_in", s.rx_handoff_in.load()},
      {"rx_handoff_dropped", s.rx_handoff_dropped.load()},
      {"sessions", s.sessions.load()},
      {"pages", s.pages.load()},
  };
}

namespace {
void add_into(json& acc, const json& x) {
  for (auto& [k, v] : x.items()) {
    if (v.is_object()) {
      if (!acc.contains(k)) acc[k] = json::object();
      add_into(acc[k], v);
    } else if (v.is_number_unsigned()) {
      acc[k] = (acc.contains(k) ? acc[k].get<uint64_t>() : 0) + v.get<uint64_t>();
    }
  }
}
}  // namespace

json sum_json(const json& list) {
  json acc = json::object();
  for (const auto& x : list) add_into(acc, x);
  return acc;
}

std::array<uint8_t, 6> parse_mac(const std::string& text) {
  std::array<uint8_t, 6> m{};
  unsigned v[6];
  char extra;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                  &v[5], &extra) != 6) {
    throw std::invalid_argument("'" + text + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  }
  for (int i = 0; i < 6; ++i) m[i] = uint8_t(v[i]);
  return m;
}

uint32_t parse_ipv4(const std::string& text) {
  in_addr a{};
  if (::inet_pton(AF_INET, text.c_str(), &a) != 1) {
    throw std::invalid_argument("'" + text + "' is not an IPv4 address");
  }
  return ntohl(a.s_addr);
}

}  // namespace mm::control
