// DEFLATE for pages through DPDK compressdev: the same code drives ISA-L
// in software (the compress_isal vdev, what tests use) and hardware
// engines (QAT, BlueField's GGA: compress_qat / mlx5_pci in the NIC
// profile's [offload]). Each worker has its own queue pair (stateless ops,
// one private xform per direction), so DEFLATE runs on every worker
// without a lock. EAL must be up and the device probed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dataplane/pages/Codecs.hpp"

struct rte_mempool;
struct rte_comp_op;

namespace mm::pages {

// Name of the first probed compressdev, or "" when there is none.
std::string first_compressdev();

class CompressdevDeflate final : public PageCodec {
 public:
  // Configures and starts `device` with `queue_pairs` queue pairs, one per
  // worker (at most what the device offers). Once per daemon, before the
  // workers run. Returns the queue pairs configured; throws
  // std::runtime_error naming the device and what DPDK refused.
  static uint16_t configure_device(const std::string& device, uint16_t queue_pairs);
  // Stops every compressdev (they stay started for their users until the
  // daemon ends); before EAL cleanup.
  static void stop_devices();
  // device: the compressdev name (e.g. "compress_isal0"); queue_pair: this
  // user's own. A device nobody configured is configured here with one
  // queue pair. Throws
  // std::runtime_error naming the device and what DPDK refused.
  explicit CompressdevDeflate(const std::string& device, uint16_t queue_pair = 0, int level = 1);
  ~CompressdevDeflate() override;
  CompressdevDeflate(const CompressdevDeflate&) = delete;
  CompressdevDeflate& operator=(const CompressdevDeflate&) = delete;

  CodecKind kind() const override { return CodecKind::deflate; }
  size_t compress(const uint8_t* page, uint8_t* out, size_t cap) override;
  bool decompress(const uint8_t* in, size_t n, uint8_t* page) override;
  const std::string& device() const { return name_; }

 private:
  // Runs one op to completion; returns bytes produced, or -1.
  long run(void* xform, const uint8_t* in, size_t n, uint8_t* out, size_t cap);

  std::string name_;
  uint8_t dev_ = 0;
  uint16_t qp_ = 0;
  rte_mempool* ops_ = nullptr;
  rte_mempool* mbufs_ = nullptr;
  void* comp_xform_ = nullptr;
  void* decomp_xform_ = nullptr;
};

}  // namespace mm::pages
