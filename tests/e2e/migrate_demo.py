#!/usr/bin/python3
"""The main job: one real QEMU VM (TCG, Debian kernel, busybox guest whose
RAM holds a mix of zero, duplicate, text, code-like and random pages and is
dirtied while it migrates) is migrated twice in the same run:

  1. directly QEMU -> QEMU (the baseline), then
  2. from there, through two memmotiond -- a source and a destination host
     (network namespaces joined by a veth) carrying the stream over DPDK --

and each hop is verified (guest RAM byte-identical, destination running).
Prints a summary: total time, downtime, bytes from QEMU, bytes on the wire."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest import flow  # noqa: E402
from mmtest.fabric import Fabric  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.vm import Vm  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--profile", default="af_packet-veth",
                    help="NIC profile: af_packet-veth, af_xdp-veth or memif")
    ap.add_argument("--ram", type=int, default=512, help="guest RAM, MiB")
    ap.add_argument("--guest-mib", type=int, default=384, help="MiB the guest workload fills")
    ap.add_argument("--dirty", type=int, default=3000, help="pages/s the guest dirties")
    a = ap.parse_args()

    kernel, initrd = ensure_guest(a.build)
    append = f"memload.mib={a.guest_mib} memload.dirty={a.dirty} memload.same=30"
    with Fabric(a.build, a.profile) as f:
        wd = f.workdir
        print(f"mm: hosts {f.src.netns or 'local'} and {f.dst.netns or 'local'} ({a.profile}); "
              f"booting a {a.ram} MiB VM ...", flush=True)
        with Vm("vm-a", wd, kernel, initrd, a.ram, append, netns=f.src.netns) as vm_a, \
             Vm("vm-b", wd, kernel, initrd, a.ram, append, incoming=f"unix:{wd}/b-in.sock",
                paused=True, netns=f.src.netns) as vm_b, \
             Vm("vm-c", wd, kernel, initrd, a.ram, append, incoming=f"unix:{wd}/c-in.sock",
                paused=True, netns=f.dst.netns) as vm_c:
            vm_a.wait_console(r"MEMLOAD READY", 300)
            print("mm: guest ready; migrating directly QEMU -> QEMU (baseline) ...", flush=True)
            flow.configure(vm_a, vm_b)
            direct = flow.migrate(vm_a, vm_b, f"unix:{wd}/b-in.sock")
            if direct.status != "completed":
                print(f"mm: the direct migration {direct.status}: {direct.info}")
                return 1
            print(f"mm:   {flow.verify(vm_a, vm_b, wd)}", flush=True)

            print("mm: migrating the same VM through the two memmotiond ...", flush=True)
            reply = f.start_session(1, f"unix:{wd}/mm-out.sock", f"unix:{wd}/c-in.sock")
            flow.configure(vm_b, vm_c)
            mm = flow.migrate(vm_b, vm_c, reply["migrate-uri"])
            s_src = f.src_daemon.wait_session(1, 60)
            s_dst = f.dst_daemon.wait_session(1, 60)
            if mm.status != "completed" or s_src["state"] != "completed" or s_dst["state"] != "completed":
                print(f"mm: migration {mm.status}; daemons: source {s_src['state']} "
                      f"({s_src.get('error')}), destination {s_dst['state']} ({s_dst.get('error')})")
                print(f.logs())
                return 1
            print(f"mm:   {flow.verify(vm_b, vm_c, wd)}", flush=True)

        c = s_src["counters"]
        rows = [
            ("", "direct QEMU", "via memmotiond"),
            ("total time", f"{direct.total_ms:.0f} ms", f"{mm.total_ms:.0f} ms"),
            ("downtime (QEMU)", f"{direct.downtime_ms:.0f} ms", f"{mm.downtime_ms:.0f} ms"),
            ("downtime (at destination)", f"{direct.dst_downtime_ms:.0f} ms",
             f"{mm.dst_downtime_ms:.0f} ms"),
            ("bytes from QEMU", f"{direct.transferred / 2**20:.1f} MiB",
             f"{c['qemu_bytes_in'] / 2**20:.1f} MiB"),
            ("bytes on the wire", "-", f"{c['wire_bytes_tx'] / 2**20:.1f} MiB "
             f"({c['data_packets_tx']} packets, {c['retransmits']} retransmitted)"),
        ]
        print("\nMemoryMotion migration summary "
              f"({a.ram} MiB guest, {a.guest_mib} MiB workload, {a.dirty} dirty pages/s, {a.profile})")
        for r in rows:
            print(f"  {r[0]:<27}{r[1]:<16}{r[2]}")
        print(f"  ratio via memmotiond / direct: total {mm.total_ms / max(direct.total_ms, 1):.2f}, "
              f"downtime {mm.downtime_ms / max(direct.downtime_ms, 1):.2f}")
        print("  guest RAM byte-identical after each hop; the guest runs on at the destination")
    return 0


if __name__ == "__main__":
    sys.exit(main())
