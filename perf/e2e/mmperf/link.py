"""A second veth pair between the two hosts' namespaces, for QEMU's own
migration over TCP, and the byte counters of any interface in a namespace.

Why not the unix socket QEMU can migrate over: QEMU 7.2 accounts multifd
bytes before compression (`pages * page_size + packet_len` in
multifd_send_pages, for `ram.transferred` and for the max-bandwidth limiter
alike), so with multifd-compression nothing QEMU reports is the bytes it
sent. Over a veth of its own the kernel counts every frame QEMU's stream
became, headers included, as the daemons' `wire_bytes_tx` does; the
daemons' AF_PACKET ports never see that traffic."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

SRC_IP = "10.78.0.1"
DST_IP = "10.78.0.2"


def sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def tx_bytes(netns: str | None, iface: str) -> int:
    """Bytes the interface sent (Ethernet header + IP packet per frame)."""
    pre = ["-n", netns] if netns else []
    out = sh(["ip", *pre, "-s", "-j", "link", "show", "dev", iface]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


@dataclass
class QemuLink:
    src_netns: str
    dst_netns: str
    src_if: str
    dst_if: str

    @classmethod
    def create(cls, src_netns: str, dst_netns: str, suffix: str, mtu: int) -> "QemuLink":
        link = cls(src_netns, dst_netns, f"mqs{suffix}", f"mqd{suffix}")
        sh(["ip", "link", "add", link.src_if, "netns", src_netns, "type", "veth", "peer", "name",
            link.dst_if, "netns", dst_netns])
        for ns, ifc, ip in ((src_netns, link.src_if, SRC_IP), (dst_netns, link.dst_if, DST_IP)):
            sh(["ip", "-n", ns, "link", "set", "dev", ifc, "mtu", str(mtu)])
            sh(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifc])
            sh(["ip", "-n", ns, "link", "set", "dev", ifc, "up"])
        return link

    def shape(self, rate_bytes_per_s: int) -> None:
        """A true link cap on what the source sends (tc tbf on its side of
        the veth), for the whole migration -- QEMU's own max-bandwidth is
        lifted for the stop-and-copy phase, a link is not. 0: no cap."""
        sh(["ip", "netns", "exec", self.src_netns, "tc", "qdisc", "del", "dev", self.src_if, "root"],
           check=False)
        if rate_bytes_per_s:
            burst = max(rate_bytes_per_s // 100, 256 << 10)  # 10 ms, as the MMP pacer's bucket
            sh(["ip", "netns", "exec", self.src_netns, "tc", "qdisc", "add", "dev", self.src_if, "root",
                "tbf", "rate", f"{rate_bytes_per_s * 8}bit", "burst", str(burst), "latency", "50ms"])

    def swap(self) -> None:
        """Source and destination sides change places (a migration back)."""
        self.src_netns, self.dst_netns = self.dst_netns, self.src_netns
        self.src_if, self.dst_if = self.dst_if, self.src_if
        self.reversed = not getattr(self, "reversed", False)

    @property
    def dst_ip(self) -> str:
        """Where the destination QEMU listens on this link."""
        return SRC_IP if getattr(self, "reversed", False) else DST_IP

    def counters(self) -> tuple[int, int]:
        """(bytes sent by the source side, bytes sent by the destination side)."""
        return tx_bytes(self.src_netns, self.src_if), tx_bytes(self.dst_netns, self.dst_if)
