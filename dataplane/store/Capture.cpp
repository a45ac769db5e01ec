#include "dataplane/store/Capture.hpp"

namespace mm::store {

Capture::Capture(Budget& budget, Backing backing, std::string file) : bytes_(budget, backing, std::move(file)) {
  log_.emplace(budget, Backing::memory);
}

uint16_t Capture::block(std::string_view name) {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (blocks_[i] == name) return uint16_t(i);
  }
  if (blocks_.size() == 0xffff) {
    broken_ = true;  // no VM has that many RAM blocks; the log cannot say which
    return 0;
  }
  blocks_.emplace_back(name);
  return uint16_t(blocks_.size() - 1);
}

void Capture::page(uint16_t block, uint64_t index, uint32_t epoch, const pages::PageHash& h, Content c,
                   std::span<const uint8_t> body) {
  if (broken_) return;
  Loc at;
  if (!body.empty()) {
    if (body.size() > pages::kPageSize || !bytes_.append(body, at)) {
      c = Content::none;
      body = {};
    }
  }
  if (c == Content::none) ++without_bytes_;
  Loc el;
  auto* e = reinterpret_cast<Entry*>(log_->reserve(kEntryBytes, el));
  if (!e) {
    broken_ = true;
    return;
  }
  *e = Entry{h, index, at, epoch, block, uint16_t(body.size()), c};
  log_->commit(kEntryBytes);
  ++entries_n_;
}

std::unique_ptr<Capture> CaptureBin::make() {
  std::string file;
  if (backing_ == Backing::file) file = files_ + "-" + std::to_string(next_file_.fetch_add(1));
  return std::make_unique<Capture>(budget_, backing_, std::move(file));
}

void CaptureBin::hand_in(std::vector<std::unique_ptr<Capture>> caps, bool home, std::string why) {
  std::lock_guard lock(mutex_);
  ++handed_;
  if (home) home_seen_ = true;
  if (!why.empty() && why_.empty()) why_ = std::move(why);
  for (auto& c : caps) {
    if (c) caps_.push_back(std::move(c));
  }
}

bool CaptureBin::complete() const {
  std::lock_guard lock(mutex_);
  return handed_ >= expected_.load();
}

std::vector<std::unique_ptr<Capture>> CaptureBin::take(std::string& why) {
  std::lock_guard lock(mutex_);
  why = why_;
  if (why.empty() && !home_seen_) why = "the session's home part never handed in";
  return std::move(caps_);
}

}  // namespace mm::store
