// XDP steering for the AF_XDP fabric port: MMP frames (IPv4/UDP to the
// MMP port range) go to the AF_XDP socket of their RX queue through the
// XSKMAP `xsks_map` the DPDK af_xdp PMD fills; everything else (ARP, ICMP,
// TCP: the host's own traffic, the peer channel) passes to the kernel.
// Loaded by the PMD via its `xdp_prog=` devarg. An optional drop rate
// (tests' loss injection) and the port range live in `mm_steer_conf`;
// a zero entry means the defaults (7470, 64 ports, no loss).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MM_DEFAULT_PORT_BASE 7470
#define MM_DEFAULT_PORTS 64

struct mm_steer_conf {
  __u32 drop_ppm;   // MMP frames dropped per million (loss injection in tests)
  __u16 port_base;  // 0: MM_DEFAULT_PORT_BASE
  __u16 ports;      // 0: MM_DEFAULT_PORTS
};

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, __u32);
} xsks_map SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct mm_steer_conf);
} mm_steer_conf SEC(".maps");

// [0] passed to the kernel, [1] MMP steered to AF_XDP, [2] MMP dropped (loss injection)
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 3);
  __type(key, __u32);
  __type(value, __u64);
} mm_steer_stats SEC(".maps");

static __always_inline int count(__u32 which, int verdict) {
  __u64* v = bpf_map_lookup_elem(&mm_steer_stats, &which);
  if (v) *v += 1;
  return verdict;
}

SEC("xdp")
int mm_steer(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return count(0, XDP_PASS);
  struct iphdr* ip = (void*)(eth + 1);
  if ((void*)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5) return count(0, XDP_PASS);
  struct udphdr* udp = (void*)(ip + 1);
  if ((void*)(udp + 1) > end) return count(0, XDP_PASS);
  __u32 key = 0;
  struct mm_steer_conf* conf = bpf_map_lookup_elem(&mm_steer_conf, &key);
  __u32 base = MM_DEFAULT_PORT_BASE, ports = MM_DEFAULT_PORTS, drop = 0;
  if (conf) {
    if (conf->port_base) base = conf->port_base;
    if (conf->ports) ports = conf->ports;
    drop = conf->drop_ppm;
  }
  __u32 dport = bpf_ntohs(udp->dest);
  if (dport < base || dport >= base + ports) return count(0, XDP_PASS);
  if (drop && bpf_get_prandom_u32() % 1000000 < drop) return count(2, XDP_DROP);
  count(1, 0);
  return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
