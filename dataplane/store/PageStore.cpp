#include "dataplane/store/PageStore.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace mm::store {

PageStore::PageStore(StoreConfig cfg) : cfg_(std::move(cfg)), budget_(cfg_.budget) {
  if (cfg_.backing == Backing::file && enabled()) {
    if (cfg_.dir.empty()) throw std::invalid_argument("store: a file-backed store needs a directory");
    if (::mkdir(cfg_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
      throw std::runtime_error("store: cannot create " + cfg_.dir + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (::stat(cfg_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw std::runtime_error("store: " + cfg_.dir + " is not a directory");
    }
    if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
      throw std::runtime_error("store: " + cfg_.dir + " must be owned by this user with mode 0700");
    }
  }
}

PageStore::~PageStore() = default;

std::unique_ptr<Capture> PageStore::capture() {
  if (!enabled()) return nullptr;
  std::string file;
  if (cfg_.backing == Backing::file) {
    std::lock_guard lock(mutex_);
    file = cfg_.dir + "/capture-" + std::to_string(::getpid()) + "-" + std::to_string(next_file_++);
  }
  return std::make_unique<Capture>(budget_, cfg_.backing, std::move(file));
}

size_t PageStore::make_room(uint64_t bytes, std::string_view keep) {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (auto it = lru_.end(); budget_.free() < bytes && it != lru_.begin();) {
    --it;
    if ((*it)->info().vm == keep) continue;
    it = lru_.erase(it);
    ++n;
    ++evictions_;
  }
  return n;
}

void PageStore::put(std::shared_ptr<const Image> img) {
  std::lock_guard lock(mutex_);
  lru_.remove_if([&](const auto& i) { return i->info().vm == img->info().vm; });
  lru_.push_front(std::move(img));
}

std::shared_ptr<const Image> PageStore::find(std::string_view vm) {
  std::lock_guard lock(mutex_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if ((*it)->info().vm == vm) {
      lru_.splice(lru_.begin(), lru_, it);
      return lru_.front();
    }
  }
  return nullptr;
}

bool PageStore::forget(std::string_view vm) {
  std::lock_guard lock(mutex_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if ((*it)->info().vm == vm) {
      lru_.erase(it);
      return true;
    }
  }
  return false;
}

std::vector<ImageInfo> PageStore::list() const {
  std::lock_guard lock(mutex_);
  std::vector<ImageInfo> out;
  for (const auto& i : lru_) out.push_back(i->info());
  return out;
}

uint64_t parse_bytes(std::string_view s) {
  uint64_t v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || p == s.data()) throw std::invalid_argument("not a size: '" + std::string(s) + "'");
  uint64_t mul = 1;
  if (p != end) {
    std::string_view unit(p, size_t(end - p));
    if (unit == "k" || unit == "K" || unit == "KiB") mul = uint64_t(1) << 10;
    else if (unit == "M" || unit == "MiB") mul = uint64_t(1) << 20;
    else if (unit == "G" || unit == "GiB") mul = uint64_t(1) << 30;
    else if (unit == "T" || unit == "TiB") mul = uint64_t(1) << 40;
    else throw std::invalid_argument("not a size: '" + std::string(s) + "' (units k, M, G, T)");
  }
  if (v > UINT64_MAX / mul) throw std::invalid_argument("size too large: '" + std::string(s) + "'");
  return v * mul;
}

}  // namespace mm::store
