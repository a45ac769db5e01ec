// XDP loss injection for tests: drops a configured share of the MMP frames
// (UDP destination port in [port_base, port_base + ports)) arriving on an
// interface, chosen at random; everything else passes to the kernel. With
// `all` set it drops that share of every frame instead (at 100 %: a cut
// link, the peer channel's TCP included).
// Config lives in an array map so a test can change the rate live.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct loss_config {
  __u32 drop_ppm;   // frames dropped per million MMP frames
  __u16 port_base;  // MMP UDP destination port range
  __u16 ports;
  __u32 all;        // 1: every frame counts, not only MMP ones
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct loss_config);
} loss_config SEC(".maps");

// [0] MMP frames seen, [1] MMP frames dropped.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} loss_stats SEC(".maps");

static __always_inline void count(__u32 which) {
  __u64* v = bpf_map_lookup_elem(&loss_stats, &which);
  if (v) *v += 1;
}

SEC("xdp")
int mm_loss(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  __u32 key = 0;
  struct loss_config* cfg = bpf_map_lookup_elem(&loss_config, &key);
  if (!cfg) return XDP_PASS;
  if (cfg->all) {
    count(0);
    if (bpf_get_prandom_u32() % 1000000 < cfg->drop_ppm) {
      count(1);
      return XDP_DROP;
    }
    return XDP_PASS;
  }
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return XDP_PASS;
  struct iphdr* ip = (void*)(eth + 1);
  if ((void*)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5) return XDP_PASS;
  struct udphdr* udp = (void*)(ip + 1);
  if ((void*)(udp + 1) > end) return XDP_PASS;
  __u16 dport = bpf_ntohs(udp->dest);
  if (dport < cfg->port_base || dport >= cfg->port_base + cfg->ports) return XDP_PASS;
  count(0);
  if (bpf_get_prandom_u32() % 1000000 < cfg->drop_ppm) {
    count(1);
    return XDP_DROP;
  }
  return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
