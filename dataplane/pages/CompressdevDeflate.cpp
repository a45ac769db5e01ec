#include "dataplane/pages/CompressdevDeflate.hpp"

#include <rte_comp.h>
#include <rte_compressdev.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "dataplane/pages/Codecs.hpp"

namespace mm::pages {

namespace {
std::atomic<unsigned> serial{0};
constexpr uint16_t kInflight = 64;
// Room for a page that does not compress (DEFLATE stored blocks add bytes).
constexpr uint16_t kBufRoom = kCompressBound;
}  // namespace

std::string first_compressdev() {
  if (rte_compressdev_count() == 0) return {};
  const char* n = rte_compressdev_name_get(0);
  return n ? n : "";
}

namespace {
uint8_t device_id(const std::string& device) {
  const int id = rte_compressdev_get_dev_id(device.c_str());
  if (id < 0) throw std::runtime_error("compressdev " + device + " does not exist (is it probed? e.g. --vdev=compress_isal0)");
  return uint8_t(id);
}
}  // namespace

uint16_t CompressdevDeflate::configure_device(const std::string& device, uint16_t queue_pairs) {
  const uint8_t dev = device_id(device);
  rte_compressdev_info info{};
  rte_compressdev_info_get(dev, &info);
  // max_nb_queue_pairs 0: the PMD sets no limit.
  const uint16_t qps = std::max<uint16_t>(1, info.max_nb_queue_pairs ? std::min(queue_pairs, info.max_nb_queue_pairs)
                                                                     : queue_pairs);
  rte_compressdev_config cfg{};
  cfg.socket_id = int(rte_socket_id());
  cfg.nb_queue_pairs = qps;
  cfg.max_nb_priv_xforms = uint16_t(2 * qps);
  cfg.max_nb_streams = 0;
  const uint16_t configured = rte_compressdev_queue_pair_count(dev);
  if (configured >= qps) return configured;  // done before (PMDs such as ISA-L configure once)
  if (configured > 0) rte_compressdev_stop(dev);  // configurable only while stopped
  if (rte_compressdev_configure(dev, &cfg) < 0) throw std::runtime_error("compressdev " + device + ": configuration refused");
  for (uint16_t q = 0; q < qps; ++q) {
    if (rte_compressdev_queue_pair_setup(dev, q, kInflight, int(rte_socket_id())) < 0) {
      throw std::runtime_error("compressdev " + device + ": queue pair " + std::to_string(q) + " refused");
    }
  }
  if (rte_compressdev_start(dev) < 0) throw std::runtime_error("compressdev " + device + ": start refused");
  return qps;
}

void CompressdevDeflate::stop_devices() {
  for (uint8_t d = 0; d < rte_compressdev_count(); ++d) rte_compressdev_stop(d);
}

CompressdevDeflate::CompressdevDeflate(const std::string& device, uint16_t queue_pair, int level)
    : name_(device), dev_(device_id(device)), qp_(queue_pair) {
  const uint16_t configured = rte_compressdev_queue_pair_count(dev_);
  if (configured == 0) {
    configure_device(device, 1);
  } else if (queue_pair >= configured) {
    throw std::runtime_error("compressdev " + device + " has " + std::to_string(configured) +
                             " queue pair(s): none for worker " + std::to_string(queue_pair));
  }
  const std::string tag = std::to_string(serial++);
  ops_ = rte_comp_op_pool_create(("mm_cops" + tag).c_str(), 256, 0, 0, int(rte_socket_id()));
  mbufs_ = rte_pktmbuf_pool_create(("mm_cmbuf" + tag).c_str(), 512, 0, 0,
                                   uint16_t(kBufRoom + RTE_PKTMBUF_HEADROOM), int(rte_socket_id()));
  if (!ops_ || !mbufs_) throw std::runtime_error("compressdev " + device + ": no memory for ops/mbufs");

  rte_comp_xform cx{};
  cx.type = RTE_COMP_COMPRESS;
  cx.compress.algo = RTE_COMP_ALGO_DEFLATE;
  cx.compress.deflate.huffman = RTE_COMP_HUFFMAN_DYNAMIC;
  cx.compress.level = level;
  cx.compress.window_size = 15;
  cx.compress.chksum = RTE_COMP_CHECKSUM_NONE;
  cx.compress.hash_algo = RTE_COMP_HASH_ALGO_NONE;
  rte_comp_xform dx{};
  dx.type = RTE_COMP_DECOMPRESS;
  dx.decompress.algo = RTE_COMP_ALGO_DEFLATE;
  dx.decompress.window_size = 15;
  dx.decompress.chksum = RTE_COMP_CHECKSUM_NONE;
  dx.decompress.hash_algo = RTE_COMP_HASH_ALGO_NONE;
  if (rte_compressdev_private_xform_create(dev_, &cx, &comp_xform_) < 0 ||
      rte_compressdev_private_xform_create(dev_, &dx, &decomp_xform_) < 0) {
    throw std::runtime_error("compressdev " + device + ": DEFLATE transforms refused");
  }
}

CompressdevDeflate::~CompressdevDeflate() {
  if (comp_xform_) rte_compressdev_private_xform_free(dev_, comp_xform_);
  if (decomp_xform_) rte_compressdev_private_xform_free(dev_, decomp_xform_);
  // The device stays started: later users (another worker's instance, the
  // next session) take their queue pair from it as configured.
  if (ops_) rte_mempool_free(ops_);
  if (mbufs_) rte_mempool_free(mbufs_);
}

long CompressdevDeflate::run(void* xform, const uint8_t* in, size_t n, uint8_t* out, size_t cap) {
  if (n > kBufRoom) return -1;
  rte_mbuf* src = rte_pktmbuf_alloc(mbufs_);
  rte_mbuf* dst = rte_pktmbuf_alloc(mbufs_);
  rte_comp_op* op = rte_comp_op_alloc(ops_);
  long produced = -1;
  if (src && dst && op) {
    std::memcpy(rte_pktmbuf_append(src, uint16_t(n)), in, n);
    rte_pktmbuf_append(dst, kBufRoom);
    op->op_type = RTE_COMP_OP_STATELESS;
    op->private_xform = xform;
    op->m_src = src;
    op->m_dst = dst;
    op->src.offset = 0;
    op->src.length = uint32_t(n);
    op->dst.offset = 0;
    op->flush_flag = RTE_COMP_FLUSH_FINAL;
    if (rte_compressdev_enqueue_burst(dev_, qp_, &op, 1) == 1) {
      rte_comp_op* done = nullptr;
      while (rte_compressdev_dequeue_burst(dev_, qp_, &done, 1) == 0) {
      }
      if (done->status == RTE_COMP_OP_STATUS_SUCCESS && done->produced <= cap) {
        std::memcpy(out, rte_pktmbuf_mtod(dst, const uint8_t*), done->produced);
        produced = long(done->produced);
      }
    }
  }
  if (op) rte_comp_op_free(op);
  if (src) rte_pktmbuf_free(src);
  if (dst) rte_pktmbuf_free(dst);
  return produced;
}

size_t CompressdevDeflate::compress(const uint8_t* page, uint8_t* out, size_t cap) {
  const long n = run(comp_xform_, page, kPageSize, out, std::min(cap, kWorthwhile));
  return n > 0 ? size_t(n) : 0;
}

bool CompressdevDeflate::decompress(const uint8_t* in, size_t n, uint8_t* page) {
  return run(decomp_xform_, in, n, page, kPageSize) == long(kPageSize);
}

}  // namespace mm::pages
