#include "dataplane/qemu/MainChannelObserver.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "dataplane/wire/Mmp.hpp"

namespace mm::qemu {

using wire::get_be16;
using wire::get_be32;
using wire::get_be64;

namespace {
constexpr uint32_t kMagic = 0x5145564d;  // "QEVM"
constexpr uint32_t kVersion = 3;
constexpr uint64_t kPageSize = 4096;

// Section types (QEMU-7.2-STREAM.md §1).
constexpr uint8_t kEof = 0x00, kStart = 0x01, kPart = 0x02, kEnd = 0x03, kFull = 0x04,
                  kSubsection = 0x05, kVmdesc = 0x06, kConfiguration = 0x07, kCommand = 0x08,
                  kFooter = 0x7e;
constexpr uint16_t kCmdPostcopyAdvise = 3, kCmdPackaged = 7;

// RAM record flags (the bits below the page size).
constexpr uint32_t kZero = 0x02, kMemSize = 0x04, kPage = 0x08, kEos = 0x10, kContinue = 0x20,
                   kXbzrle = 0x40, kHook = 0x80, kCompressPage = 0x100, kMultifdFlush = 0x200;
constexpr uint32_t kKnown = kZero | kMemSize | kPage | kEos | kContinue | kMultifdFlush;


std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

std::string printable(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (p[i] >= 0x20 && p[i] < 0x7f) ? char(p[i]) : '?';
  return s;
}
}  // namespace

bool MainChannelObserver::gather(const uint8_t*& p, const uint8_t* end, size_t want) {
  if (have_ < want) {
    const size_t n = std::min<size_t>(want - have_, size_t(end - p));
    std::memcpy(hdr_ + have_, p, n);
    have_ += n;
    p += n;
  }
  return have_ >= want;
}

void MainChannelObserver::go_opaque(std::string why) {
  if (step_ == Step::opaque) return;
  step_ = Step::opaque;
  why_ = std::move(why);
  sink_.on_opaque(why_);
}

void MainChannelObserver::start_skip(uint64_t n, Step then) {
  have_ = 0;
  if (n == 0) {
    step_ = then;
    return;
  }
  skip_ = n;
  after_skip_ = then;
  step_ = Step::skip;
}

void MainChannelObserver::on_section_type(uint8_t t) {
  have_ = 0;
  section_type_ = t;
  switch (t) {
    case kConfiguration: step_ = Step::config_len; return;
    case kCommand: step_ = Step::command; return;
    case kStart:
    case kFull: step_ = Step::full_start; return;
    case kPart:
    case kEnd: step_ = Step::part_end; return;
    case kFooter: step_ = Step::footer; return;
    case kEof: go_opaque("end of the device state (EOF section)"); return;
    case kVmdesc: go_opaque("VM description (JSON) section"); return;
    default: go_opaque("unknown section type " + hex(t) + " at byte " + std::to_string(at_)); return;
  }
}

void MainChannelObserver::finish_ram_record() {
  have_ = 0;
  if (rec_flags_ & kZero) {
    step_ = Step::ram_zero_fill;
    return;
  }
  ++pages_;
  sink_.on_page(block_, rec_offset_);
  start_skip(kPageSize, Step::ram_record);
}

void MainChannelObserver::on_ram_record() {
  const uint64_t addr = get_be64(hdr_);
  const uint32_t flags = uint32_t(addr & (kPageSize - 1));
  rec_offset_ = addr & ~(kPageSize - 1);
  rec_flags_ = flags;
  have_ = 0;
  if (flags & ~kKnown) {
    std::string what = "RAM record flags " + hex(flags);
    if (flags & kXbzrle) what += " (XBZRLE)";
    if (flags & kCompressPage) what += " (compressed page)";
    if (flags & kHook) what += " (RDMA hook)";
    go_opaque(what + ": not parsed");
    return;
  }
  const uint32_t kind = flags & (kZero | kMemSize | kPage | kEos | kMultifdFlush);
  if (kind == kEos) {
    ++eos_;
    sink_.on_eos(eos_);
    // On the main channel the section ends (its footer comes as a section
    // type); the preempt channel has only records.
    step_ = kind_ == Kind::main ? Step::section : Step::ram_record;
    return;
  }
  if (kind == kMultifdFlush) {
    ++flushes_;
    sink_.on_multifd_flush();
    step_ = Step::ram_record;
    return;
  }
  if (kind == kMemSize) {
    if (kind_ == Kind::preempt) {
      go_opaque("RAM setup record on the postcopy-preempt channel");
      return;
    }
    if (postcopy_) {
      go_opaque("RAM setup with postcopy: block page sizes are not self-describing");
      return;
    }
    mem_total_ = rec_offset_;
    mem_seen_ = 0;
    step_ = mem_total_ == 0 ? Step::ram_record : Step::mem_size_block;
    return;
  }
  if (kind != kZero && kind != kPage) {
    go_opaque("RAM record with flags " + hex(flags) + " is not one record type");
    return;
  }
  if (!(flags & kContinue)) {
    step_ = Step::ram_block;
    return;
  }
  if (!have_block_) {
    go_opaque("RAM record continues a block never named");
    return;
  }
  finish_ram_record();
}

bool MainChannelObserver::syncs_before_each_eos(std::string_view machine) {
  // "pc-i440fx-7.2", "pc-q35-8.0", "s390-ccw-virtio-7.1": the version is
  // what follows the last '-'.
  const size_t dash = machine.rfind('-');
  if (dash == std::string_view::npos) return false;
  const std::string_view v = machine.substr(dash + 1);
  const size_t dot = v.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == v.size()) return false;
  if (dot > 4 || v.size() - dot - 1 > 4) return false;  // no such version; and no overflow below
  unsigned major = 0, minor = 0;
  for (char c : v.substr(0, dot)) {
    if (c < '0' || c > '9') return false;
    major = major * 10 + unsigned(c - '0');
  }
  for (char c : v.substr(dot + 1)) {
    if (c < '0' || c > '9') return false;
    minor = minor * 10 + unsigned(c - '0');
  }
  return major < 8 || (major == 8 && minor == 0);
}

void MainChannelObserver::feed(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  const uint8_t* end = p + bytes.size();
  seen_ += bytes.size();
  while (p < end && step_ != Step::opaque) {
    // Every pass consumes a byte or changes step; a parser bug must never
    // become a spinning worker.
    const uint8_t* before = p;
    at_ = seen_ - uint64_t(end - p);  // the stream offset of p, however the bytes were split
    const Step was = step_;
    const size_t had = have_;
    switch (step_) {
      case Step::opaque: return;
      case Step::skip: {
        const uint64_t n = std::min<uint64_t>(skip_, uint64_t(end - p));
        p += n;
        skip_ -= n;
        if (skip_ == 0) {
          step_ = after_skip_;
          have_ = 0;
        }
        break;
      }
      case Step::header:
        if (!gather(p, end, 8)) break;
        if (get_be32(hdr_) != kMagic || get_be32(hdr_ + 4) != kVersion) {
          go_opaque("not a QEMU migration stream v3 (first bytes " + hex(get_be64(hdr_)) + ")");
          break;
        }
        have_ = 0;
        step_ = Step::section;
        break;
      case Step::section:
        if (!gather(p, end, 1)) break;
        on_section_type(hdr_[0]);
        break;
      case Step::config_len: {
        if (!gather(p, end, 4)) break;
        const uint32_t n = get_be32(hdr_);
        if (n > 256) {
          go_opaque("configuration with a machine name of " + std::to_string(n) + " bytes");
          break;
        }
        if (!gather(p, end, 4 + size_t(n))) break;
        machine_.assign(reinterpret_cast<const char*>(hdr_ + 4), n);
        sync_before_each_eos_ = syncs_before_each_eos(machine_);
        have_ = 0;
        step_ = Step::config_sub;
        break;
      }
      case Step::config_sub:
        if (!gather(p, end, 1)) break;
        if (hdr_[0] == kSubsection) {
          have_ = 0;
          step_ = Step::sub_header;
        } else {
          on_section_type(hdr_[0]);  // the configuration ended; this is the next section
        }
        break;
      case Step::sub_header: {
        if (!gather(p, end, 1)) break;
        const size_t n = hdr_[0];
        if (!gather(p, end, 1 + n + 4)) break;
        const std::string_view name(reinterpret_cast<const char*>(hdr_ + 1), n);
        if (name == "configuration/target-page-bits") {
          start_skip(4, Step::config_sub);
        } else if (name == "configuration/uuid") {
          start_skip(16, Step::config_sub);
        } else if (name == "configuration/capabilities") {
          have_ = 0;
          step_ = Step::sub_caps_count;
        } else {
          go_opaque("configuration subsection '" + printable(hdr_ + 1, n) + "' is not known");
        }
        break;
      }
      case Step::sub_caps_count:
        if (!gather(p, end, 4)) break;
        caps_left_ = get_be32(hdr_);
        if (caps_left_ > 64) {
          go_opaque("configuration lists " + std::to_string(caps_left_) + " capabilities");
          break;
        }
        have_ = 0;
        step_ = caps_left_ ? Step::sub_cap : Step::config_sub;
        break;
      case Step::sub_cap: {
        if (!gather(p, end, 1)) break;
        const size_t n = hdr_[0];
        if (!gather(p, end, 1 + n)) break;
        if (std::string_view(reinterpret_cast<const char*>(hdr_ + 1), n) == "x-ignore-shared") {
          ignore_shared_ = true;
        }
        have_ = 0;
        step_ = --caps_left_ ? Step::sub_cap : Step::config_sub;
        break;
      }
      case Step::command: {
        if (!gather(p, end, 4)) break;
        const uint16_t cmd = get_be16(hdr_), len = get_be16(hdr_ + 2);
        if (cmd == kCmdPackaged) {
          go_opaque("packaged postcopy stream (command 7)");
          break;
        }
        if (cmd == kCmdPostcopyAdvise) postcopy_ = true;
        start_skip(len, Step::section);
        break;
      }
      case Step::full_start: {
        if (!gather(p, end, 5)) break;
        const size_t n = hdr_[4];
        if (!gather(p, end, 5 + n + 8)) break;
        const std::string id = printable(hdr_ + 5, n);
        if (section_type_ == kStart && id == "ram") {
          ram_section_ = get_be32(hdr_);
          ram_known_ = true;
          have_ = 0;
          step_ = Step::ram_record;
        } else if (section_type_ == kFull) {
          go_opaque("device state of '" + id + "' (not self-delimiting)");
        } else {
          go_opaque("iterative section '" + id + "' (not self-delimiting)");
        }
        break;
      }
      case Step::part_end: {
        if (!gather(p, end, 4)) break;
        const uint32_t id = get_be32(hdr_);
        have_ = 0;
        if (ram_known_ && id == ram_section_) {
          step_ = Step::ram_record;
        } else {
          go_opaque("section " + std::to_string(id) + " is not RAM (not self-delimiting)");
        }
        break;
      }
      case Step::footer:
        if (!gather(p, end, 4)) break;
        have_ = 0;
        step_ = Step::section;
        break;
      case Step::ram_record:
        if (!gather(p, end, 8)) break;
        on_ram_record();
        break;
      case Step::ram_block: {
        if (!gather(p, end, 1)) break;
        const size_t n = hdr_[0];
        if (n == 0) {
          go_opaque("RAM record with an empty block name");
          break;
        }
        if (!gather(p, end, 1 + n)) break;
        block_.assign(reinterpret_cast<const char*>(hdr_ + 1), n);
        have_block_ = true;
        finish_ram_record();
        break;
      }
      case Step::ram_zero_fill:
        if (!gather(p, end, 1)) break;
        ++zero_;
        sink_.on_zero_page(block_, rec_offset_);
        have_ = 0;
        step_ = Step::ram_record;
        break;
      case Step::mem_size_block: {
        if (!gather(p, end, 1)) break;
        const size_t n = hdr_[0];
        const size_t want = 1 + n + 8 + (ignore_shared_ ? 8 : 0);
        if (!gather(p, end, want)) break;
        const uint64_t used = get_be64(hdr_ + 1 + n);
        have_ = 0;
        if (n == 0 || used > mem_total_ - mem_seen_) {
          go_opaque("RAM setup: block sizes do not add up to the total " + std::to_string(mem_total_));
          break;
        }
        mem_seen_ += used;
        step_ = mem_seen_ == mem_total_ ? Step::ram_record : Step::mem_size_block;
        break;
      }
    }
    if (p == before && step_ == was && have_ == had) {
      go_opaque("observer made no progress at byte " + std::to_string(at_) + " (a bug)");
    }
  }
}

}  // namespace mm::qemu
