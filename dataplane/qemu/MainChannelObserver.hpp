// Observes the bytes of a QEMU main migration channel (source to
// destination) as the relay carries them, and reports what its RAM section
// says: zero pages and raw pages written by the main channel, and every RAM
// EOS (the end of an epoch: QEMU 7.2 sends a multifd SYNC on every channel
// before each one). It never changes or holds back a byte. It parses what
// is self-delimiting (QEMU-7.2-STREAM.md §1): the header, the
// configuration section, commands, section headers and footers, and the
// "ram" section's records; at anything else (device state, another
// iterative section, a packaged postcopy stream) it stops reporting and
// says why (on_opaque) -- expected once device state starts. Malformed
// input never crashes it, never makes it buffer more than one record
// header, and turns it opaque. Pure code: no I/O.
//
// The same parser reads QEMU 7.2's postcopy-preempt channel (Kind::preempt):
// bare RAM records with no header or sections (the pages the source sends
// because the destination asked for them; QEMU-7.2-STREAM.md §3), where an
// EOS ends nothing but a burst.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace mm::qemu {

class MainChannelObserver {
 public:
  struct Sink {
    virtual ~Sink() = default;
    // offset: byte offset in the block, page-aligned.
    virtual void on_zero_page(std::string_view block, uint64_t offset) = 0;
    virtual void on_page(std::string_view block, uint64_t offset) = 0;
    // eos_count counts the RAM EOS markers from 1.
    virtual void on_eos(uint64_t eos_count) = 0;
    // Parsing stopped; nothing is reported from now on.
    virtual void on_opaque(std::string_view why) = 0;
    // A MULTIFD_FLUSH record (QEMU 8.1+ machine types): multifd SYNC
    // barriers now come once per RAM round, no longer before every EOS.
    virtual void on_multifd_flush() {}
  };

  enum class Kind : uint8_t { main, preempt };
  explicit MainChannelObserver(Sink& sink, Kind kind = Kind::main)
      : sink_(sink), kind_(kind), step_(kind == Kind::main ? Step::header : Step::ram_record) {}

  // The next bytes of the channel, split anywhere.
  void feed(std::span<const uint8_t> bytes);

  bool opaque() const { return step_ == Step::opaque; }
  const std::string& opaque_reason() const { return why_; }
  uint64_t eos_count() const { return eos_; }
  uint64_t zero_records() const { return zero_; }
  uint64_t page_records() const { return pages_; }
  uint64_t multifd_flushes() const { return flushes_; }
  // The machine type named by the configuration section (empty before it).
  const std::string& machine() const { return machine_; }
  // True when the machine type is known to make QEMU put a SYNC on every
  // multifd channel before each RAM EOS (versioned machine types up to 8.0,
  // whose compat properties keep multifd-flush-after-each-section on; QEMU
  // 7.2 has no other behaviour). False for 8.1+ machine types, unversioned
  // ones and before the configuration was read: epochs counted by EOS then
  // say nothing about what the channels' SYNCs order.
  bool sync_before_each_eos() const { return sync_before_each_eos_; }
  uint64_t bytes_seen() const { return seen_; }

 private:
  enum class Step : uint8_t {
    header,          // magic + version
    section,         // a section type byte
    config_len,      // CONFIGURATION: be32 machine name length
    config_sub,      // after the name or a subsection: 0x05 or the next section
    sub_header,      // subsection: u8 namelen, name, be32 version
    sub_caps_count,  // capabilities subsection: be32 count
    sub_cap,         // one capability: u8 len + name
    command,         // be16 cmd, be16 len
    full_start,      // START/FULL header after the type byte
    part_end,        // PART/END header after the type byte
    footer,          // be32 section id after 0x7e
    ram_record,      // be64 offset|flags
    ram_block,       // u8 len + idstr of a record without CONTINUE
    ram_zero_fill,   // u8 fill
    mem_size_block,  // setup: u8 len, idstr, be64 used_length [+ be64 GPA]
    skip,            // skipping skip_ bytes, then back to after_skip_
    opaque,
  };

  // Takes up to `want` bytes into hdr_; true once hdr_ holds at least
  // `want` (a unit read in two steps asks for its length byte again).
  bool gather(const uint8_t*& p, const uint8_t* end, size_t want);
  void go_opaque(std::string why);
  void start_skip(uint64_t n, Step then);
  // A complete unit is in hdr_: act on it.
  void on_section_type(uint8_t t);
  void on_ram_record();
  void finish_ram_record();
  // Whether a machine type syncs multifd before each EOS (see the getter).
  static bool syncs_before_each_eos(std::string_view machine);

  Sink& sink_;
  Kind kind_;
  Step step_;
  Step after_skip_ = Step::section;
  uint8_t hdr_[8 + 256 + 16] = {};
  size_t have_ = 0;
  size_t want_ = 0;
  uint64_t skip_ = 0;

  uint8_t section_type_ = 0;
  uint32_t ram_section_ = 0;
  bool ram_known_ = false;
  bool ignore_shared_ = false;  // capabilities: MEM_SIZE blocks carry a GPA
  bool postcopy_ = false;       // POSTCOPY_ADVISE seen
  uint32_t caps_left_ = 0;

  uint64_t rec_offset_ = 0;
  uint32_t rec_flags_ = 0;
  uint64_t mem_total_ = 0, mem_seen_ = 0;
  std::string block_;  // the current RAM block (CONTINUE)
  bool have_block_ = false;

  uint64_t eos_ = 0, zero_ = 0, pages_ = 0, flushes_ = 0, seen_ = 0;
  uint64_t at_ = 0;  // stream offset of the unit being parsed (for reasons)
  std::string why_;
  std::string machine_;
  bool sync_before_each_eos_ = false;  // from machine_, once it is read
};

}  // namespace mm::qemu
