#include "dataplane/pages/Page.hpp"

#include <xxhash.h>

namespace mm::pages {

PageHash page_hash(const uint8_t* p) {
  const XXH128_hash_t h = XXH3_128bits(p, kPageSize);
  return {h.low64, h.high64};
}

}  // namespace mm::pages
