#!/usr/bin/python3
"""The main job: one real QEMU VM (TCG, Debian kernel, busybox guest whose
RAM holds a mix of zero, duplicate, text, code-like and random pages and is
dirtied while it migrates) is migrated twice in the same run, both times
under the same link cap (default 1 Gbit/s):

  1. with QEMU's own best: multifd (4 channels) + zstd, QEMU to QEMU over
     TCP on a veth between a "source" and a "destination host" (network
     namespaces), the cap a tc tbf on that veth; then
  2. the same VM onwards through two memmotiond (DPDK, the NIC profile's
     fabric between the hosts), QEMU multifd into the source daemon and
     its default page policy (zero pages, dedupe, LZ4), the cap the
     daemons' MMP pacer on wire bytes.

Each hop is verified (guest RAM byte-identical, destination running).
Prints both side by side: total time, downtime, bytes on the wire, CPU
seconds of each QEMU and each daemon, and the MemoryMotion/QEMU ratios.
The migrations, caps and measurements are perf/e2e's (mmperf)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "perf" / "e2e"))

from mmperf.cpu import GIB  # noqa: E402
from mmperf.matrix import MODES, Mode, cap_bytes  # noqa: E402
from mmperf.runner import SETTLE_S, MigrationRunner, RunFailed, default_timeout  # noqa: E402

from mmtest.daemon import ControlError  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.qmp import QmpError  # noqa: E402
from mmtest.vm import Vm  # noqa: E402

QEMU_MODE = MODES["qemu-multifd4-zstd"]
# `pages: {}`: the page policy with every member left at the daemon's default.
MM_MODE = Mode("mm-default", True, multifd=4, pages={})


def cap_label(text: str, nbytes: int) -> str:
    return "no link cap" if not nbytes else f"link cap {nbytes * 8 / 1e9:g} Gbit/s"


def mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f} MiB"


def ratio(mm, q) -> str:
    return "-" if mm is None or not q else f"{mm / q:.2f}"


def summary(a: argparse.Namespace, cap: int, q: dict, m: dict, policy: dict | None) -> list[str]:
    qc, mc = q["cpu_s"], m["cpu_s"]
    q_cpu = qc["qemu_src"] + qc["qemu_dst"]        # QEMU's own migration needs no daemons
    m_cpu = sum(mc.values())
    q_vcpu = sum((q.get("cpu_vcpu_s") or {}).values())
    m_vcpu = sum((m.get("cpu_vcpu_s") or {}).values())
    ds, dd = m["daemon_src"], m["daemon_dst"]
    codec = (policy or {}).get("codec", "default")
    head_q, head_m = "QEMU multifd+zstd", f"MemoryMotion ({codec})"
    rows = [
        ("total time", f"{q['total_ms'] / 1000:.2f} s", f"{m['total_ms'] / 1000:.2f} s",
         ratio(m["total_ms"], q["total_ms"])),
        ("downtime (at destination)", f"{q['dst_downtime_ms']:.0f} ms", f"{m['dst_downtime_ms']:.0f} ms",
         ratio(m["dst_downtime_ms"], q["dst_downtime_ms"])),
        ("downtime (QEMU's figure)", f"{q['downtime_ms']:.0f} ms", f"{m['downtime_ms']:.0f} ms",
         ratio(m["downtime_ms"], q["downtime_ms"])),
        ("bytes on the wire", mib(q["wire_bytes"]), mib(m["wire_bytes"]), ratio(m["wire_bytes"], q["wire_bytes"])),
        ("bytes from QEMU (its count)", mib(q["qemu_bytes"]), mib(ds["qemu_bytes_in"]), ""),
        ("CPU s, source QEMU", f"{qc['qemu_src']:.2f}", f"{mc['qemu_src']:.2f}", ratio(mc["qemu_src"], qc["qemu_src"])),
        ("CPU s, destination QEMU", f"{qc['qemu_dst']:.2f}", f"{mc['qemu_dst']:.2f}",
         ratio(mc["qemu_dst"], qc["qemu_dst"])),
        ("CPU s, source daemon", f"(idle {qc['daemon_src']:.2f})", f"{mc['daemon_src']:.2f}", ""),
        ("CPU s, destination daemon", f"(idle {qc['daemon_dst']:.2f})", f"{mc['daemon_dst']:.2f}", ""),
        ("CPU s, all on the path", f"{q_cpu:.2f}", f"{m_cpu:.2f}", ratio(m_cpu, q_cpu)),
        ("  of which the guest's vCPU", f"{q_vcpu:.2f}", f"{m_vcpu:.2f}", ""),
        ("  without the guest's vCPU", f"{q_cpu - q_vcpu:.2f}", f"{m_cpu - m_vcpu:.2f}",
         ratio(m_cpu - m_vcpu, q_cpu - q_vcpu)),
    ]
    w0, w1, w2 = 30, max(len(head_q), 18) + 2, max(len(head_m), 18) + 2
    out = [f"MemoryMotion vs QEMU's own migration: {a.ram} MiB guest ({a.guest_mib} MiB workload, "
           f"{a.dirty} dirty pages/s), {cap_label(a.cap, cap)}, daemons on {a.profile}",
           f"  {'':<{w0}}{head_q:<{w1}}{head_m:<{w2}}MM/QEMU"]
    out += [f"  {r[0]:<{w0}}{r[1]:<{w1}}{r[2]:<{w2}}{r[3]}" for r in rows]
    per = [m.get("cpu_daemon_src_s_per_gib"), m.get("cpu_daemon_dst_s_per_gib")]
    out.append("  daemons' CPU s per GiB: source {} (read from QEMU), destination {} (written to QEMU)".format(
        *("-" if v is None else f"{v:.2f}" for v in per)))
    out.append(f"  MemoryMotion pages: {ds['pages_in']} multifd pages: zero {ds['pages_zero']}, dedupe "
               f"{ds['pages_dedupe_hits']}, compressed {ds['pages_compressed']} "
               f"({mib(ds['pages_compressed_bytes'])}), raw {ds['pages_raw']}; "
               f"{dd['pages_verified']} verified at the destination; {ds['retransmits']} retransmits")
    out.append("  where the CPU went (seconds per kind of thread, the largest four):")
    names = {"qemu_src": "source QEMU", "qemu_dst": "destination QEMU", "daemon_src": "source daemon",
             "daemon_dst": "destination daemon"}
    for label, rec, procs in ((head_q, q, ("qemu_src", "qemu_dst")), (head_m, m, tuple(names))):
        for proc in procs:
            kinds = list((rec.get("cpu_threads_s") or {}).get(proc, {}).items())[:4]
            out.append(f"    {label}, {names[proc]}: " + (", ".join(f"{k} {v:.2f}" for k, v in kinds) or "-"))
    if policy:
        on = lambda k: "on" if policy.get(k) else "off"  # noqa: E731
        out.append(f"  page policy (the daemon's default): codec {policy.get('codec')}, zero pages "
                   f"{on('zero')}, dedupe {on('dedupe')} ({policy.get('dedupe-slots')} slots), "
                   f"unchanged-page filter {on('unchanged')}")
    out.append("  wire: QEMU = its veth's transmit counter (Ethernet+IPv4+TCP); MemoryMotion = the "
               "source daemon's wire_bytes_tx (Ethernet+IPv4+UDP+MMP)")
    out.append("  guest RAM byte-identical after each migration; the guest runs on at the destination")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--profile", default="af_packet-veth",
                    help="NIC profile of the daemons: af_packet-veth, af_xdp-veth or memif")
    ap.add_argument("--ram", type=int, default=512, help="guest RAM, MiB")
    ap.add_argument("--guest-mib", type=int, default=384, help="MiB the guest workload fills")
    ap.add_argument("--dirty", type=int, default=3000, help="pages/s the guest dirties")
    ap.add_argument("--cap", default="1G",
                    help="link cap for both migrations, bits/s: 1G (default), 10G, 2.5G, 500M or unlimited")
    ap.add_argument("--json", type=Path, help="also write both migrations' records (perf/e2e's run records) here")
    a = ap.parse_args()
    try:
        cap = cap_bytes(a.cap)
    except ValueError as e:
        ap.error(str(e))

    kernel, initrd = ensure_guest(a.build)
    append = f"memload.mib={a.guest_mib} memload.dirty={a.dirty} memload.same=30"
    timeout = default_timeout(a.ram)
    runner = MigrationRunner(a.build, kernel, initrd, a.profile, qemu_transport="tcp")
    q: dict = {}
    m: dict = {}
    policy = None
    try:
        runner.open()
        f = runner.fabric
        assert f is not None
        if runner.qemu_transport != "tcp":
            print("mm: no veth between the hosts for QEMU's own migration: it goes over a unix "
                  "socket, capped by QEMU's max-bandwidth", flush=True)
        wd = f.workdir
        print(f"mm: hosts {f.src.netns} and {f.dst.netns}, daemons on {a.profile}, "
              f"{cap_label(a.cap, cap)}; booting a {a.ram} MiB VM ...", flush=True)
        with Vm("vm-a", wd, kernel, initrd, a.ram, append, netns=f.src.netns) as vm_a, \
             Vm("vm-b", wd, kernel, initrd, a.ram, append, incoming="defer", paused=True,
                netns=f.dst.netns) as vm_b, \
             Vm("vm-c", wd, kernel, initrd, a.ram, append, incoming="defer", paused=True,
                netns=f.dst.netns) as vm_c:
            vm_a.wait_console(r"MEMLOAD READY", 300)
            time.sleep(SETTLE_S)
            print("mm: guest ready; migrating with QEMU's own multifd + zstd, QEMU -> QEMU "
                  "(source host -> destination host) ...", flush=True)
            runner.migrate_vms(vm_a, vm_b, QEMU_MODE, cap, q, timeout)
            print(f"mm:   total {q['total_ms'] / 1000:.2f} s, downtime {q['dst_downtime_ms']:.0f} ms, "
                  f"wire {mib(q['wire_bytes'])}; {q['verify']}", flush=True)
            time.sleep(SETTLE_S)  # the guest dirties at its pace again before the next hop
            print("mm: migrating the same VM on through the two memmotiond (default page policy) ...",
                  flush=True)
            runner.migrate_vms(vm_b, vm_c, MM_MODE, cap, m, timeout)
            print(f"mm:   total {m['total_ms'] / 1000:.2f} s, downtime {m['dst_downtime_ms']:.0f} ms, "
                  f"wire {mib(m['wire_bytes'])}; {m['verify']}", flush=True)
            try:
                policy = f.src_daemon.session(m["session"]).get("pages")
            except (ControlError, OSError):
                policy = None
    except (RunFailed, AssertionError, TimeoutError, RuntimeError, ConnectionError, OSError,
            QmpError, ControlError) as e:
        print(f"mm: FAILED: {type(e).__name__}: {e}")
        if runner.fabric:
            print(runner.fabric.logs())
        return 1
    finally:
        runner.close()
        if a.json:
            a.json.write_text(json.dumps({"qemu": q, "memmotion": m}, indent=1))

    print()
    print("\n".join(summary(a, cap, q, m, policy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
