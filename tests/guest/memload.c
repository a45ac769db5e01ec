/* memload: the test guest's workload (PID 1's child in the initramfs).
 * Fills N MiB with a deterministic mix of page kinds a real VM has (zero,
 * duplicate, text, machine-code-like, random), says READY on the console,
 * then keeps dirtying pages at a set rate -- some with new bytes, some
 * rewritten with identical bytes -- and prints a TICK every second so a
 * test can see the guest running after migration.
 *
 * usage: memload MIB DIRTY_PAGES_PER_S SAME_PERCENT MIX [LINES [HOT_PERCENT]]
 *   MIX: default | idle (no dirtying) | random (all random pages)
 *   LINES: 0 (default) rewrites a dirtied page whole (new bytes of its
 *     kind); N > 0 changes N of its 64 cache lines (8 bytes each, at random
 *     places in the line), as counters, heap objects and page-cache updates
 *     do: a partial-page write.
 *   HOT_PERCENT: 0 (default) dirties pages uniformly; P > 0 gives 90 % of
 *     the writes to a hot set of P % of the pages (the rest go to the
 *     whole of memory), a hot/cold working set.
 *
 * Commands (one letter and a newline on the second serial port, ttyS1, or
 * on stdin when there is none; a test writes them after a postcopy
 * switchover, with the guest running at the destination):
 *   T  touch 2000 random pages, timing each first read (a page still at the
 *      source faults, and the vCPU waits for it), and check each page's bytes
 *      against what memload last wrote there: "MEMLOAD TOUCH n=.. p50_us=..
 *      p99_us=.. max_us=.. bad=..";
 *   V  check every page: "MEMLOAD VERIFY pages=.. bad=.. first_bad=..".
 * Checks need whole-page writes (LINES 0): memload keeps each page's
 * generation and rebuilds the page from it.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t xorshift(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

static const char* words[] = {"the", "migration", "page", "memory", "kernel", "error", "request",
                              "INFO", "WARN", "connection", "timeout", "user", "session",
                              "GET /index.html", "200", "value", "cache", "miss", "hit", "\n"};

static unsigned char templates[16][PAGE];

enum kind { ZERO, DUP, TEXT, CODE, RANDOM };

static enum kind kind_of(uint64_t page, int all_random) {
  if (all_random) return RANDOM;
  unsigned r = (unsigned)(mix64(page) % 100);
  if (r < 30) return ZERO;
  if (r < 50) return DUP;
  if (r < 75) return TEXT;
  if (r < 85) return CODE;
  return RANDOM;
}

static void fill(unsigned char* p, uint64_t page, uint64_t generation, int all_random) {
  uint64_t s = mix64(page * 0x9E3779B97F4A7C15ULL + generation + 1) | 1;
  switch (kind_of(page, all_random)) {
    case ZERO:
      memset(p, 0, PAGE);
      if (generation) p[xorshift(&s) % PAGE] = (unsigned char)(generation | 1);
      break;
    case DUP:
      memcpy(p, templates[(mix64(page) >> 8) % 16], PAGE);
      if (generation) p[xorshift(&s) % PAGE] ^= (unsigned char)(generation | 1);
      break;
    case TEXT: {
      size_t off = 0;
      while (off < PAGE) {
        const char* w = words[xorshift(&s) % (sizeof words / sizeof *words)];
        size_t n = strlen(w);
        if (off + n + 1 > PAGE) n = PAGE - off - 1;
        memcpy(p + off, w, n);
        off += n;
        p[off++] = ' ';
      }
      break;
    }
    case CODE: {
      static const unsigned char ops[] = {0x48, 0x89, 0xe5, 0x55, 0xc3, 0x8b, 0x45, 0xf8, 0xe8,
                                          0x0f, 0x1f, 0x44, 0x00, 0x83, 0xc4, 0x41, 0x5d, 0xff};
      for (size_t i = 0; i < PAGE; ++i) {
        uint64_t r = xorshift(&s);
        p[i] = (r & 7) < 6 ? ops[r % sizeof ops] : (unsigned char)(r >> 16);
      }
      break;
    }
    case RANDOM:
      for (size_t i = 0; i < PAGE; i += 8) {
        uint64_t r = xorshift(&s);
        memcpy(p + i, &r, 8);
      }
      break;
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/* Whether page i holds what memload last wrote there (generation gen[i]). */
static int page_ok(const unsigned char* mem, const uint32_t* gen, uint64_t i, int all_random) {
  static unsigned char want[PAGE];
  fill(want, i, gen[i], all_random);
  return memcmp(mem + i * PAGE, want, PAGE) == 0;
}

static void touch(const unsigned char* mem, const uint32_t* gen, uint64_t pages, int all_random, uint64_t* rng) {
  enum { N = 2000 };
  static double lat[N];
  uint64_t bad = 0;
  for (int k = 0; k < N; ++k) {
    uint64_t i = xorshift(rng) % pages;
    double t0 = now_s();
    (void)*(volatile const unsigned char*)(mem + i * PAGE);
    lat[k] = (now_s() - t0) * 1e6;
    if (gen && !page_ok(mem, gen, i, all_random)) ++bad;
  }
  qsort(lat, N, sizeof lat[0], cmp_double);
  printf("MEMLOAD TOUCH n=%d p50_us=%.1f p99_us=%.1f max_us=%.1f bad=%llu%s\n", N, lat[N / 2], lat[N * 99 / 100],
         lat[N - 1], (unsigned long long)bad, gen ? "" : " (not checked: partial-page writes)");
  fflush(stdout);
}

static void verify(const unsigned char* mem, const uint32_t* gen, uint64_t pages, int all_random) {
  uint64_t bad = 0, first = UINT64_MAX;
  for (uint64_t i = 0; gen && i < pages; ++i) {
    if (!page_ok(mem, gen, i, all_random)) {
      if (!bad) first = i;
      ++bad;
    }
  }
  if (!gen) {
    printf("MEMLOAD VERIFY not possible: partial-page writes\n");
  } else {
    printf("MEMLOAD VERIFY pages=%llu bad=%llu first_bad=%lld\n", (unsigned long long)pages, (unsigned long long)bad,
           bad ? (long long)first : -1LL);
  }
  fflush(stdout);
}

int main(int argc, char** argv) {
  long mib = argc > 1 ? atol(argv[1]) : 64;
  long dirty = argc > 2 ? atol(argv[2]) : 2000;
  long same = argc > 3 ? atol(argv[3]) : 30;
  const char* mix = argc > 4 ? argv[4] : "default";
  long lines = argc > 5 ? atol(argv[5]) : 0;
  long hot = argc > 6 ? atol(argv[6]) : 0;
  int all_random = strcmp(mix, "random") == 0;
  if (strcmp(mix, "idle") == 0) dirty = 0;
  if (mib <= 0 || dirty < 0 || same < 0 || same > 100 || lines < 0 || lines > PAGE / 64 || hot < 0 ||
      hot > 100) {
    fprintf(stderr, "memload: bad arguments\n");
    return 2;
  }
  uint64_t pages = (uint64_t)mib * 1024 * 1024 / PAGE;
  unsigned char* mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) {
    perror("memload: mmap");
    return 1;
  }
  uint64_t seed = 0x1234567;
  for (int t = 0; t < 16; ++t)
    for (int i = 0; i < PAGE; ++i) templates[t][i] = (unsigned char)xorshift(&seed);
  for (uint64_t i = 0; i < pages; ++i) fill(mem + i * PAGE, i, 0, all_random);
  /* Each page's generation, for the console's checks (whole-page writes only). */
  uint32_t* gen = lines == 0 ? calloc(pages, sizeof *gen) : NULL;
  int cmd_fd = open("/dev/ttyS1", O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (cmd_fd < 0) {
    cmd_fd = 0;
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  }
  /* The hot set: the first hot_pages of a fixed permutation-free spread,
   * page (k * stride) % pages, so that it is scattered over memory. */
  uint64_t hot_pages = hot > 0 ? pages * (uint64_t)hot / 100 : 0;
  if (hot > 0 && hot_pages == 0) hot_pages = 1;
  const uint64_t stride = 0x9E3779B1ULL | 1;
  printf("MEMLOAD READY %ld MiB dirty=%ld/s same=%ld%% mix=%s lines=%ld hot=%ld%%\n", mib, dirty,
         same, mix, lines, hot);
  fflush(stdout);

  uint64_t rng = 0xC0FFEE, generation = 1, tick = 0;
  double next_tick = now_s() + 1, start = now_s();
  uint64_t done = 0;
  for (;;) {
    /* Dirty at the configured rate, in 10 ms slices. */
    double elapsed = now_s() - start;
    uint64_t due = (uint64_t)(elapsed * (double)dirty);
    while (done < due) {
      uint64_t page = xorshift(&rng) % pages;
      if (hot_pages > 0 && xorshift(&rng) % 100 < 90)
        page = ((xorshift(&rng) % hot_pages) * stride) % pages;
      unsigned char* p = mem + page * PAGE;
      if ((long)(xorshift(&rng) % 100) < same) {
        /* Same bytes written again: the page is dirty but unchanged. */
        volatile uint64_t* w = (volatile uint64_t*)p;
        for (size_t i = 0; i < PAGE / 8; ++i) w[i] = w[i];
      } else if (lines > 0) {
        /* A partial-page write: N cache lines each get 8 new bytes. */
        for (long l = 0; l < lines; ++l) {
          uint64_t r = xorshift(&rng);
          uint64_t v = mix64(generation++);
          memcpy(p + (r % (PAGE / 64)) * 64 + ((r >> 16) % 8) * 8, &v, 8);
        }
      } else {
        if (gen) gen[page] = (uint32_t)generation;
        fill(p, page, generation++, all_random);
      }
      ++done;
    }
    char cmd;
    while (read(cmd_fd, &cmd, 1) == 1) {
      if (cmd == 'T') touch(mem, gen, pages, all_random, &rng);
      if (cmd == 'V') verify(mem, gen, pages, all_random);
    }
    if (now_s() >= next_tick) {
      printf("MEMLOAD TICK %llu\n", (unsigned long long)++tick);
      fflush(stdout);
      next_tick += 1;
    }
    usleep(10000);
  }
}
