// What every fuzz target shares: a check that aborts (so libFuzzer keeps
// the input as a crash) with the property that failed, and a reader that
// splits one fuzz input into length-prefixed pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

namespace mm::fuzz {

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: property violated: %s\n", file, line, what);
  std::abort();
}
#define MM_FUZZ_CHECK(cond) ((cond) ? (void)0 : ::mm::fuzz::fail(#cond, __FILE__, __LINE__))

// Pieces of the input, each preceded by a big-endian 16-bit length (a
// length past the end takes the rest).
class Pieces {
 public:
  explicit Pieces(std::span<const uint8_t> in) : in_(in) {}
  bool next(std::span<const uint8_t>& piece) {
    if (pos_ + 2 > in_.size()) return false;
    size_t n = (size_t(in_[pos_]) << 8) | in_[pos_ + 1];
    pos_ += 2;
    if (n > in_.size() - pos_) n = in_.size() - pos_;
    piece = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // One byte, 0 at the end.
  uint8_t byte() { return pos_ < in_.size() ? in_[pos_++] : 0; }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

}  // namespace mm::fuzz
