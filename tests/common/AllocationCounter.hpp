// Counts heap allocations of a test or benchmark binary: replaces the
// global operator new/delete. Include it in exactly one .cpp of a binary;
// count between AllocationCounter::start() and stop().
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace mm::test {

struct AllocationCounter {
  static inline std::atomic<bool> on{false};
  static inline std::atomic<uint64_t> count{0};
  static void start() {
    count = 0;
    on = true;
  }
  static uint64_t stop() {
    on = false;
    return count.load();
  }
  // Counting pauses and resumes without resetting the count.
  static void pause() { on = false; }
  static void resume() { on = true; }
};

// Out of line, so the compiler does not pair a replaced new with free().
[[gnu::noinline]] inline void* counted_alloc(std::size_t n, std::size_t align) {
  if (AllocationCounter::on.load(std::memory_order_relaxed)) {
    AllocationCounter::count.fetch_add(1, std::memory_order_relaxed);
  }
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n ? n : 1)
                                               : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) throw std::bad_alloc();
  return p;
}
[[gnu::noinline]] inline void counted_free(void* p) noexcept { std::free(p); }

}  // namespace mm::test

void* operator new(std::size_t n) { return mm::test::counted_alloc(n, 0); }
void* operator new[](std::size_t n) { return mm::test::counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return mm::test::counted_alloc(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return mm::test::counted_alloc(n, std::size_t(a)); }
void operator delete(void* p) noexcept { mm::test::counted_free(p); }
void operator delete[](void* p) noexcept { mm::test::counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { mm::test::counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { mm::test::counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { mm::test::counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { mm::test::counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { mm::test::counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { mm::test::counted_free(p); }
