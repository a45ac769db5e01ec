#!/usr/bin/python3
"""Integration: two memmotiond on a real DPDK port (AF_PACKET or AF_XDP on a
veth between two network namespaces, or memif) carry a large byte stream
in both directions through one session, byte-exact, optionally with loss
injected by the kernel (netem) on both veths."""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest.fabric import Fabric  # noqa: E402
from mmtest.proc import report  # noqa: E402
from streampeers import QEMU_MAGIC, DestinationPeer, connect_source, expected_hash  # noqa: E402


class KernelTraffic:
    """Ping and a TCP transfer between the hosts' kernel addresses, run while
    the dataplane owns the same interfaces: they must not be disturbed."""

    TCP_BYTES = 4 << 20

    def __init__(self, f: Fabric):
        self.f = f

    def start(self) -> "KernelTraffic":
        f = self.f
        self.ping = subprocess.Popen(f.src.exec_prefix() + ["ping", "-c", "20", "-i", "0.05", "-W", "2",
                                     f.dst.kernel_ip], stdout=subprocess.PIPE, text=True)
        server = ("import socket,hashlib;s=socket.create_server(('%s',7999));c,_=s.accept();h=hashlib.sha256();n=0\n"
                  "while True:\n d=c.recv(65536)\n if not d: break\n n+=len(d);h.update(d)\n"
                  "print(n,h.hexdigest())" % f.dst.kernel_ip)
        self.server = subprocess.Popen(f.dst.exec_prefix() + [sys.executable, "-c", server],
                                       stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        client = ("import socket,time\nfor i in range(50):\n try:\n  c=socket.create_connection(('%s',7999));break\n"
                  " except OSError: time.sleep(0.1)\nc.sendall(bytes(range(256))*%d);c.close()"
                  % (f.dst.kernel_ip, self.TCP_BYTES // 256))
        self.client = subprocess.Popen(f.src.exec_prefix() + [sys.executable, "-c", client])
        return self

    def finish(self) -> list[str]:
        problems = []
        out, _ = self.ping.communicate(timeout=60)
        m = re.search(r"(\d+) received", out)
        if not m or int(m.group(1)) < 19:
            problems.append(f"ping between the kernels suffered: {out.strip().splitlines()[-2:]}")
        self.client.wait(timeout=60)
        got, _ = self.server.communicate(timeout=60)
        want = hashlib.sha256(bytes(range(256)) * (self.TCP_BYTES // 256)).hexdigest()
        if got.split() != [str(self.TCP_BYTES), want]:
            problems.append(f"TCP between the kernels broke: {got.strip()}")
        print(f"kernel traffic alongside: ping {m.group(1) if m else '?'}/20, TCP {got.split()[:1]} bytes intact")
        return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--kind", default="af_packet-veth")
    ap.add_argument("--mib", type=int, default=256, help="MiB source -> destination")
    ap.add_argument("--back-mib", type=int, default=16, help="MiB destination -> source")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="percent of MMP frames dropped by XDP on both veths")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    ap.add_argument("--max-bandwidth", type=int, default=0,
                    help="pace the session to this many wire bytes/s and check it held")
    ap.add_argument("--kernel-traffic", action="store_true",
                    help="also ping and stream TCP between the hosts' kernel addresses meanwhile")
    ap.add_argument("--encrypt", choices=["required", "off"],
                    help="negotiate the sessions over the peer channel with this --encrypt "
                         "(default: set them up directly, without a key)")
    a = ap.parse_args()

    fwd, back = a.mib << 20, a.back_mib << 20
    with Fabric(a.build, a.kind, peer_channel=a.encrypt) as f:
        if a.loss:
            f.set_loss(f.src, a.loss)
            f.set_loss(f.dst, a.loss)
        ids = list(range(41, 41 + a.sessions))
        dests, srcs = {}, {}
        for sid in ids:
            dst_path = str(f.workdir / f"dst-qemu-{sid}.sock")
            src_path = str(f.workdir / f"src-qemu-{sid}.sock")
            dests[sid] = DestinationPeer(dst_path, seed=2 * sid, send_bytes=back)
            reply = f.start_session(sid, f"unix:{src_path}", f"unix:{dst_path}",
                                    max_bandwidth=a.max_bandwidth)
            assert reply["migrate-uri"] == f"unix:{src_path}", reply
        t0 = time.monotonic()
        kernel = KernelTraffic(f).start() if a.kernel_traffic else None
        for sid in ids:
            srcs[sid] = connect_source(str(f.workdir / f"src-qemu-{sid}.sock"), seed=2 * sid + 1,
                                       send_bytes=fwd)
        problems = []
        totals = {"wire": 0, "rtx_src": 0, "rtx_dst": 0, "dup": 0}
        rates: list[float] = []
        for sid in ids:
            src, dest = srcs[sid], dests[sid]
            s_src = f.src_daemon.wait_session(sid, a.timeout)
            s_dst = f.dst_daemon.wait_session(sid, a.timeout)
            ok = src.join(30) and dest.pump is not None and dest.pump.join(30)
            if not ok:
                problems.append(f"session {sid}: the stand-in QEMU streams did not finish")
            for s in (s_src, s_dst):
                if s["state"] != "completed":
                    problems.append(f"session {sid}: {s['role']} {s['state']}: {s.get('error')}")
                if s["encrypted"] != (a.encrypt == "required"):
                    problems.append(f"session {sid}: {s['role']} encrypted {s['encrypted']} with --encrypt {a.encrypt}")
                if s["counters"]["bad_tag_rx"]:
                    problems.append(f"session {sid}: {s['role']} refused {s['counters']['bad_tag_rx']} honest "
                                    "packets as bad tags")
            if dest.pump is None or dest.pump.received != fwd:
                problems.append(f"session {sid}: destination got "
                                f"{dest.pump.received if dest.pump else 0} of {fwd} bytes")
            elif dest.pump.recv_hash.hexdigest() != expected_hash(2 * sid + 1, fwd, QEMU_MAGIC):
                problems.append(f"session {sid}: destination bytes differ from what the source sent")
            if src.received != back:
                problems.append(f"session {sid}: source got {src.received} of {back} return-path bytes")
            elif src.recv_hash.hexdigest() != expected_hash(2 * sid, back):
                problems.append(f"session {sid}: return-path bytes differ from what the destination sent")
            cs, cd = s_src["counters"], s_dst["counters"]
            if cs["qemu_bytes_in"] != fwd or cd["qemu_bytes_out"] != fwd:
                problems.append(f"session {sid}: counters disagree with the stream: "
                                f"{cs['qemu_bytes_in']=} {cd['qemu_bytes_out']=} expected {fwd}")
            if cs["wire_bytes_tx"] <= fwd:
                problems.append(f"wire bytes {cs['wire_bytes_tx']} cannot be below the payload {fwd}")
            totals["wire"] += cs["wire_bytes_tx"]
            if a.max_bandwidth:
                rates.append(cs["wire_bytes_tx"] / (s_src["duration-ms"] / 1000))
            totals["rtx_src"] += cs["retransmits"]
            totals["rtx_dst"] += cd["retransmits"]
            totals["dup"] += cd["duplicates_rx"]
        elapsed = time.monotonic() - t0
        if a.loss and totals["rtx_src"] + totals["rtx_dst"] == 0:
            problems.append(f"{a.loss}% loss injected but nothing was retransmitted")
        if a.sessions > 1:
            for d in (f.src_daemon, f.dst_daemon):
                per = [w["sessions"] for w in d.stats()["workers"]]
                hand = sum(w["rx_handoff_in"] for w in d.stats()["workers"])
                print(f"{d.name}: sessions per worker {per}, datagrams handed between workers {hand}")
                if len(per) > 1 and min(per) == 0:
                    problems.append(f"{d.name}: a worker owns no session: {per}")
        if a.max_bandwidth:
            rate = max(rates)
            print(f"paced at {a.max_bandwidth / 1e6:.1f} MB/s: the session sent {rate / 1e6:.1f} MB/s")
            # An upper bound only: a busy machine can make it slower, never faster.
            if rate > a.max_bandwidth * 1.10:
                problems.append(f"pacer exceeded: {rate:.0f} B/s > {a.max_bandwidth} B/s")
        if kernel:
            problems += kernel.finish()
            if a.kind == "af_xdp-veth":
                st = f.steer_stats(f.dst)
                print(f"mm_steer on the destination veth: {st}")
                if st["steered"] == 0 or st["passed"] == 0:
                    problems.append(f"steering program counters do not show both paths: {st}")
        drops = f.loss_reports()
        if a.loss and not any(" dropped 0" not in d for d in drops):
            problems.append(f"the XDP loss injector dropped nothing: {drops}")
        for sid in ids:
            srcs[sid].close()
            dests[sid].close()
        for d in drops:
            print(d)
        print(f"{a.kind}{f' loss {a.loss}%' if a.loss else ''}{f' encrypt {a.encrypt}' if a.encrypt else ''}: "
              f"{a.sessions} x ({a.mib} MiB + "
              f"{a.back_mib} MiB back) in {elapsed:.2f} s "
              f"({a.sessions * fwd / elapsed / 2**20:.0f} MiB/s), wire tx {totals['wire'] / 2**20:.1f} MiB, "
              f"retransmits src {totals['rtx_src']} dst {totals['rtx_dst']}, "
              f"duplicates at dst {totals['dup']}")
        return report(problems, f.logs() if problems else "")


if __name__ == "__main__":
    sys.exit(main())
