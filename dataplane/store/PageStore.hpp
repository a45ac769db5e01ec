// The page store of one daemon (README.md): within a byte budget, the last
// image of each VM this host sent (and, later, received), named by the
// identity the manager gives (`vm`). Images are made from the captures of a
// completed migration and replace the VM's older one; the least recently
// migrated VMs are evicted first. An image is looked up by its own VM's
// name only: never across VMs.
//
// Threads: the map is behind a mutex (the control thread and the peer
// channel's threads look images up; cold path only). Captures are owned by
// one flow each; images are read-only and shared (a session using one keeps
// it alive after an eviction); the Budget is atomic.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/store/Image.hpp"

namespace mm::store {

struct StoreConfig {
  uint64_t budget = uint64_t(1) << 30;  // bytes; 0 turns the store off
  Backing backing = Backing::memory;
  std::string dir;  // Backing::file: where the captures' files go (created 0700)
};

class PageStore {
 public:
  explicit PageStore(StoreConfig cfg);
  ~PageStore();
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  bool enabled() const { return cfg_.budget > 0; }
  // A capture for one flow of a migration about to be logged (nullptr when
  // the store is off). Its bytes count against the budget from the start.
  std::unique_ptr<Capture> capture();
  // Evicts least recently migrated images, never `keep`, until `bytes` are
  // free or nothing else is left; returns how many it evicted.
  size_t make_room(uint64_t bytes, std::string_view keep = {});
  // Keeps a completed migration's image, replacing the VM's older one.
  void put(std::shared_ptr<const Image> img);
  // The VM's image, marked as just used; nullptr when none is held.
  std::shared_ptr<const Image> find(std::string_view vm);
  bool forget(std::string_view vm);
  // Newest first.
  std::vector<ImageInfo> list() const;

  const Budget& budget() const { return budget_; }
  Budget& budget() { return budget_; }
  const StoreConfig& config() const { return cfg_; }
  uint64_t evictions() const {
    std::lock_guard lock(mutex_);
    return evictions_;
  }

 private:
  StoreConfig cfg_;
  Budget budget_;
  mutable std::mutex mutex_;
  std::list<std::shared_ptr<const Image>> lru_;  // most recently used first
  uint64_t evictions_ = 0;
  uint64_t next_file_ = 0;
};

// "1G", "512M", "64k", "0" or plain bytes; throws std::invalid_argument.
uint64_t parse_bytes(std::string_view s);

}  // namespace mm::store
