// JSON views of engine state for the control socket and memmotionctl.
#pragma once

#include <nlohmann/json.hpp>

#include "dataplane/engine/Engine.hpp"

namespace mm::control {

nlohmann::json to_json(const engine::SessionInfo& s);
nlohmann::json to_json(const engine::EngineStats& s);
nlohmann::json to_json(const pages::PagePolicy& p);
// The lines a daemon logs when a session ends: bytes, wire, and what the
// page pipeline did with the pages.
std::string session_summary(const engine::SessionInfo& s);
// session-start / migrate "pages": {"codec": "lz4"|"zstd"|"deflate"|"none",
// "zero", "unchanged", "dedupe", "delta": bool, "dedupe-slots": n}; members left out
// keep their defaults. Throws std::invalid_argument naming the bad member.
pages::PagePolicy page_policy_from_json(const nlohmann::json& j);
// Adds up objects of the same shape (numbers summed, recursively).
nlohmann::json sum_json(const nlohmann::json& list);
// "aa:bb:cc:dd:ee:ff" -> bytes; "a.b.c.d" -> host-order IPv4. Throw
// std::invalid_argument naming the bad text.
std::array<uint8_t, 6> parse_mac(const std::string& text);
uint32_t parse_ipv4(const std::string& text);

}  // namespace mm::control
