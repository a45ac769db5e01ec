#include "dataplane/pages/Page.hpp"

#include <xxhash.h>

namespace mm::pages {

PageHash page_hash(const uint8_t* p) {
  const XXH128_hash_t h = XXH3_128bits(p, kPageSize);
  return {h.low64, h.high64};
}

const PageHash& zero_page_hash() {
  static const PageHash h = [] {
    static const uint8_t zeros[kPageSize] = {};
    return page_hash(zeros);
  }();
  return h;
}

}  // namespace mm::pages
