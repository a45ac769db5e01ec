#!/usr/bin/python3
"""e2e: a real QEMU VM (TCG, Debian kernel, memload dirtying its RAM) migrates
from a source host to a destination host (network namespaces joined by a
veth) through two memmotiond carrying the stream over DPDK. Guest RAM must
be byte-identical on both sides and the destination guest must run on.

With --multifd the daemons run the page pipeline on the multifd channels
(--pages sets the source's policy, JSON as session-start takes it); the
counters must then account for every page QEMU sent, show each enabled
feature at work (and disabled ones idle), and the destination must have
verified every page it wrote. --expect-unchanged asks for the unchanged
filter to have skipped pages (a workload that rewrites identical bytes).

The daemons negotiate the session over their peer channel, so it is
encrypted (AES-256-GCM) by default; --encrypt off keeps it in the clear
(keyed tags only), --encrypt none sets it up directly (session-prepare /
session-start, no key).

--loss PCT drops that share of the frames arriving at each host's veth
(XDP, both directions) for the whole migration: the result must be the
same, with retransmits to show for it.

--vm NAME names the VM for the source daemon's page store: once the
session is released its image must be listed, cover the whole of guest RAM,
and read back (every page decoded and checked against its hash) identical
to the source VM's RAM dump.

--ping-pong (with --vm and the peer channel) migrates the VM on from the
destination back to the source host afterwards: the source daemon, now the
destination, holds the VM's image, sends its page table over the fabric,
and the pages the VM did not change since come back as PAGE_STORED records
(no bytes), each checked against the image before QEMU gets it. RAM must be
identical again, the stored pages counted on both sides, none refused.

--kill-destination-daemon instead kills the destination daemon mid-way: the
source daemon must fail the session, the source QEMU must report a failed
migration, and the source VM must keep running."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib  # noqa: E402

from mmtest import flow  # noqa: E402
from mmtest.fabric import Fabric  # noqa: E402
from mmtest.proc import report  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.vm import Vm  # noqa: E402


def guest_append(a) -> str:
    """The guest's kernel command line: memload's workload."""
    return (f"memload.mib={a.guest_mib} memload.dirty={a.dirty} memload.same={a.same} "
            f"memload.lines={a.lines} memload.hot={a.hot}")


@contextlib.contextmanager
def vm_pair(f: Fabric, kernel: Path, initrd: Path, a, session: int):
    """A running source VM on the source host with its workload ready, a
    paused incoming VM on the destination host, and a started session;
    yields (src, dst, URI the source QEMU migrates to)."""
    append = guest_append(a)
    wd = f.workdir
    with Vm("src-vm", wd, kernel, initrd, a.ram, append, netns=f.src.netns) as src, \
         Vm("dst-vm", wd, kernel, initrd, a.ram, append, incoming=f"unix:{wd}/dst-in.sock",
            paused=True, netns=f.dst.netns) as dst:
        src.wait_console(r"MEMLOAD READY", 180)
        reply = f.start_session(session, f"unix:{wd}/src-out.sock", f"unix:{wd}/dst-in.sock",
                                pages=a.pages, vm=a.vm)
        flow.configure(src, dst, multifd=a.multifd)
        yield src, dst, reply["migrate-uri"]


def rss_mib(d) -> float:
    """Resident memory of a daemon (its process is memmotiond: ip netns exec execs it)."""
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def migrate_ok(f: Fabric, kernel: Path, initrd: Path, a) -> int:
    rss_before = {d.name: rss_mib(d) for d in (f.src_daemon, f.dst_daemon)}
    with vm_pair(f, kernel, initrd, a, 7) as (src, dst, uri):
        if a.loss:
            for host in (f.src, f.dst):
                f.set_loss(host, a.loss)
        r = flow.migrate(src, dst, uri, timeout=300)
        dropped = f.loss_reports() if a.loss else []
        s_src = f.src_daemon.wait_session(7, 60)
        s_dst = f.dst_daemon.wait_session(7, 60)
        problems = []
        if r.status != "completed":
            problems.append(f"QEMU migration {r.status}: {r.info.get('error-desc')}")
        for s in (s_src, s_dst):
            if s["state"] != "completed":
                problems.append(f"{s['role']} daemon session {s['state']}: {s.get('error')}")
            if s["encrypted"] != (a.encrypt == "required"):
                problems.append(f"{s['role']} daemon session encrypted {s['encrypted']} with --encrypt {a.encrypt}")
        verdict = ""
        if not problems:
            try:
                verdict = flow.verify(src, dst, f.workdir, keep_source_dump=bool(a.vm))
            except AssertionError as e:
                problems.append(str(e))
        cs, cd = s_src["counters"], s_dst["counters"]
        if a.multifd and (cs["multifd_channels"] != a.multifd or cd["multifd_channels"] != a.multifd):
            problems.append(f"expected {a.multifd} multifd channels relayed, source "
                            f"{cs['multifd_channels']}, destination {cd['multifd_channels']}")
        if not a.multifd and not problems and cs["qemu_bytes_in"] != cd["qemu_bytes_out"]:
            problems.append(f"bytes in at source {cs['qemu_bytes_in']} != bytes out at "
                            f"destination {cd['qemu_bytes_out']}")
        if a.multifd and not problems:
            problems += check_pages(s_src, s_dst, a)
        if a.loss:
            print("  loss: " + "; ".join(dropped))
            if cs["retransmits"] == 0:
                problems.append(f"{a.loss} % loss but no retransmit")
            if not any(" dropped " in d and not d.rstrip().endswith(" dropped 0") for d in dropped):
                problems.append(f"the loss injectors dropped nothing: {dropped}")
        if a.expect_workers and not problems:
            problems += check_workers(f, s_src, s_dst, a.expect_workers)
        if a.multifd and not problems:
            # A finished session frees its buffers once its linger (the dead
            # timeout, 5 s) is over: dictionaries alone are tens of MiB per
            # stream, and a daemon that kept them ran out of memory after
            # ~40 sessions.
            time.sleep(6.5)
            for d in (f.src_daemon, f.dst_daemon):
                grown = rss_mib(d) - rss_before[d.name]
                print(f"  {d.name}: resident memory {grown:+.0f} MiB after the session was released")
                # The source's page store keeps the VM's image on purpose.
                # Both ends keep the VM's image on purpose.
                kept = d.ctl.execute("query-store")["used"] / 2**20 if a.vm else 0
                if grown - kept > 64:
                    problems.append(f"{d.name} kept {grown:.0f} MiB after the session ended "
                                    f"({kept:.0f} MiB of it the page store)")
        if a.vm and not problems:
            problems += check_store(f, a, s_src, s_dst)
        print(f"through memmotiond ({f.kind}, multifd {a.multifd}, encrypt {a.encrypt}): {r.line()}; stream "
              f"{cs['qemu_bytes_in'] / 2**20:.1f} MiB from QEMU, "
              f"{cs['wire_bytes_tx'] / 2**20:.1f} MiB on the wire, return path "
              f"{cd['qemu_bytes_in']} B, retransmits {cs['retransmits']}; {verdict}")
        if a.multifd:
            keys = ("pages_in", "pages_zero", "pages_unchanged", "pages_unchanged_held", "pages_dedupe_hits", "pages_delta", "pages_delta_bytes", "pages_delta_bases",
                    "pages_compressed", "pages_compressed_bytes", "pages_raw", "page_record_bytes",
                    "main_eos", "main_zero_records", "multifd_packets", "multifd_sync_packets")
            print("  source pages: " + ", ".join(f"{k} {cs[k]}" for k in keys))
            print(f"  destination: pages_written {cd['pages_written']}, pages_verified {cd['pages_verified']}, "
                  f"pages_unchanged {cd['pages_unchanged']}, empty_packets_dropped {cd['empty_packets_dropped']}; "
                  f"policy {s_src.get('pages')}")
        return report(problems, f.logs() if problems else "")


def ping_pong(f: Fabric, kernel: Path, initrd: Path, a) -> int:
    """A -> B through the daemons (A's daemon keeps the VM's image), then
    B -> A: the second migration carries unchanged pages as PAGE_STORED."""
    problems = []
    wd = f.workdir
    with vm_pair(f, kernel, initrd, a, 7) as (src, dst, uri):
        r1 = flow.migrate(src, dst, uri, timeout=300)
        s1 = f.src_daemon.wait_session(7, 60)
        if r1.status != "completed" or s1["state"] != "completed":
            return report([f"first migration: QEMU {r1.status}, source daemon {s1['state']} ({s1.get('error')})"],
                          f.logs())
        flow.verify(src, dst, wd, keep_source_dump=True)  # RAM identical, destination resumed and running
        s1_dst = f.dst_daemon.wait_session(7, 60)
        problems += check_store(f, a, s1, s1_dst, dump=f"{src.name}.ram")
        img = None
        for _ in range(60):  # the image is made once the session's parts released it (the linger)
            st = f.src_daemon.ctl.execute("query-store")
            img = next((i for i in st["images"] if i["vm"] == a.vm), None)
            if img:
                break
            time.sleep(0.25)
        if not img:
            return report([f"no image of {a.vm} on the first source: {st.get('last-dropped')}"], f.logs())
        print(f"first migration: {r1.line()}; wire {s1['counters']['wire_bytes_tx'] / 2**20:.1f} MiB; "
              f"image {img['pages-held']} of {img['pages']} pages, {img['bytes'] / 2**20:.1f} MiB")
        time.sleep(a.pause)
        with Vm("back-vm", wd, kernel, initrd, a.ram, guest_append(a), incoming=f"unix:{wd}/back-in.sock",
                paused=True, netns=f.src.netns) as back:
            args = {"session": 8, "peer": f.peer_address(f.src), "dst-incoming": f"unix:{wd}/back-in.sock",
                    "listen": f"unix:{wd}/back-out.sock", "encrypt": f.peer_channel, "vm": a.vm}
            reply = f.dst_daemon.ctl.execute("migrate", **args)
            flow.configure(dst, back, multifd=a.multifd)
            r2 = flow.migrate(dst, back, reply["migrate-uri"], timeout=300)
            s_b = f.dst_daemon.wait_session(8, 60)
            s_a = f.src_daemon.wait_session(8, 60)
            for s in (s_b, s_a):
                if s["state"] != "completed":
                    problems.append(f"second migration: {s['role']} daemon session {s['state']}: {s.get('error')}")
            if r2.status != "completed":
                problems.append(f"second migration: QEMU {r2.status}: {r2.info.get('error-desc')}")
            verdict = ""
            if not problems:
                try:
                    verdict = flow.verify(dst, back, wd, keep_source_dump=True)
                except AssertionError as e:
                    problems.append(str(e))
            if not problems:
                # Both images again, now with the stored pages' bytes taken
                # from each host's earlier image of the VM.
                with f.reversed():
                    problems += check_store(f, a, s_b, s_a, dump=f"{dst.name}.ram")
            cb, ca = s_b["counters"], s_a["counters"]
            w1, w2 = s1["counters"]["wire_bytes_tx"], cb["wire_bytes_tx"]
            print(f"second migration (back): {r2.line()}; wire {w2 / 2**20:.1f} MiB ({w2 / w1:.3f} of the first); "
                  f"pages {cb['pages_in']}, stored {cb['pages_stored']}, delta against the image {cb['pages_delta_image']} "
                  f"in {cb['pages_delta_bytes'] / 2**10:.0f} KiB of deltas (destination filled {ca['pages_stored']}, "
                  f"refused {ca['pages_stored_refused']}); {s_b.get('store-note')}; {verdict}")
            if not problems:
                if cb["pages_stored"] == 0:
                    problems.append("the second migration sent no page as PAGE_STORED")
                if ca["pages_stored"] != cb["pages_stored"] or ca["pages_stored_refused"]:
                    problems.append(f"stored pages: source sent {cb['pages_stored']}, destination filled "
                                    f"{ca['pages_stored']}, refused {ca['pages_stored_refused']}")
                if cb["pages_stored"] < img["pages-held"] // 2:
                    problems.append(f"only {cb['pages_stored']} of the image's {img['pages-held']} pages went as "
                                    "PAGE_STORED (the guest changed few of them)")
                if w2 >= w1 / 2:
                    problems.append(f"the second migration moved {w2} wire bytes, the first {w1}")
                if a.lines and cb["pages_delta_image"] == 0:
                    problems.append("the guest changed a few cache lines of the pages it dirtied, but no page went "
                                    "as a delta against the destination's image")
                if cb["pages_delta_image"] != ca["pages_delta_image"]:
                    problems.append(f"deltas against the image: source sent {cb['pages_delta_image']}, destination "
                                    f"rebuilt {ca['pages_delta_image']}")
    return report(problems, f.logs() if problems else "")


def check_store(f: Fabric, a, s_src: dict, s_dst: dict, dump: str = "src-vm.ram", keep_dump: bool = False) -> list[str]:
    """Both daemons made an image of the VM: the source from what its flows
    sent, the destination from what it wrote to its QEMU. Each is listed by
    name, covers guest RAM, and reads back (decoded, hash-checked) identical
    to the RAM dump flow.verify wrote."""
    out = []
    ram_pages = a.ram * 256
    for d, s in ((f.src_daemon, s_src), (f.dst_daemon, s_dst)):
        st = {}
        # Merged on the control thread's next tick after the session's
        # release (its linger over): until then a second hop's host still
        # lists its earlier image of the VM, so wait until no capture is
        # pending or being merged, not just for an image to be listed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = d.ctl.execute("query-store")
            if st["capturing"] == 0 and any(i["vm"] == a.vm for i in st["images"]):
                break
            time.sleep(0.25)
        img = next((i for i in st["images"] if i["vm"] == a.vm), None)
        cs = s["counters"]
        print(f"  {d.name} page store: {st['used'] / 2**20:.1f} of {st['budget'] / 2**20:.0f} MiB used, images "
              f"{[(i['vm'], i['pages-held'], i['pages'], i.get('carried')) for i in st['images']]}, last merge "
              f"{st['last-merge-ms']} ms; session logged {cs['store_pages']} pages ({cs['store_pages_without_bytes']} "
              f"without bytes), {cs['store_bytes'] / 2**20:.1f} MiB")
        if img is None:
            out.append(f"no image of VM {a.vm} in {d.name}'s store: {st.get('last-dropped')}")
            continue
        if img["pages"] < ram_pages or img["pages-held"] != img["pages"]:
            out.append(f"{d.name}'s image holds {img['pages-held']} of {img['pages']} pages, guest RAM has {ram_pages}")
        chk = d.ctl.execute("store-check", vm=a.vm, file=str(Path(f.workdir) / dump))
        print(f"  {d.name} store-check against the RAM dump: {chk}")
        if (chk["pages"] < ram_pages or chk["identical"] != chk["pages"] or chk["not-held"] or chk["different"]
                or chk["unreadable"] or chk["beyond-file"]):
            out.append(f"{d.name}'s image does not read back as the guest's RAM: {chk}")
    if not keep_dump:
        (Path(f.workdir) / dump).unlink()
    return out


def check_workers(f: Fabric, s_src: dict, s_dst: dict, n: int) -> list[str]:
    """One session's pages must have been handled by n workers on both
    sides (all of them when spread; one, its home, when not): the session's
    per-worker parts and each worker's page counter."""
    out = []
    for d, s in ((f.src_daemon, s_src), (f.dst_daemon, s_dst)):
        parts = {p["worker"]: p for p in s.get("workers", [])}
        busy = sorted(w for w, p in parts.items() if p["pages"] > 0)
        per_worker = [w["pages"] for w in d.stats()["workers"]]
        split = ", ".join(f"worker {w}: {p['pages']} pages on {p['channels']} channels" for w, p in sorted(parts.items()))
        print(f"  {d.name}: session 7 over workers: {split}; worker page counters {per_worker}")
        if len(busy) != n:
            out.append(f"{d.name}: the session's pages went through workers {busy}, expected {n} workers")
        if sum(p["pages"] for p in parts.values()) != s["counters"]["pages_in"]:
            out.append(f"{d.name}: the parts' pages {[p['pages'] for p in parts.values()]} do not add up to "
                       f"pages_in {s['counters']['pages_in']}")
        if sum(1 for p in per_worker if p > 0) != n:
            out.append(f"{d.name}: worker page counters {per_worker}, expected {n} workers with pages")
    return out


def check_pages(s_src: dict, s_dst: dict, a) -> list[str]:
    """The page counters must add up and match the policy."""
    cs, cd = s_src["counters"], s_dst["counters"]
    pol = s_src.get("pages", {})
    out = []
    n = cs["pages_in"]
    if n == 0:
        out.append("no multifd page went through the page pipeline")
        return out
    paths = (cs["pages_zero"] + cs["pages_unchanged"] + cs["pages_dedupe_hits"] + cs["pages_compressed"] + cs["pages_raw"]
             + cs["pages_stored"] + cs["pages_delta"])
    if paths != n:
        out.append(f"source: {n} pages in but {paths} accounted for by zero/unchanged/dedupe/compressed/raw/stored/delta")
    if cd["pages_delta"] != cs["pages_delta"] or cd["pages_delta_bytes"] != cs["pages_delta_bytes"]:
        out.append(f"destination rebuilt {cd['pages_delta']} delta pages from {cd['pages_delta_bytes']} bytes, the source "
                   f"sent {cs['pages_delta']} in {cs['pages_delta_bytes']}")
    if not pol.get("delta") and cs["pages_delta"] != 0:
        out.append(f"delta is off but pages_delta = {cs['pages_delta']}")
    if cd["pages_in"] != n:
        out.append(f"destination decoded {cd['pages_in']} pages, the source encoded {n}")
    if cd["pages_written"] + cd["pages_unchanged"] != n:
        out.append(f"destination wrote {cd['pages_written']} + omitted {cd['pages_unchanged']} != {n}")
    if cd["pages_verified"] != cd["pages_written"] - cd["pages_zero"]:
        out.append(f"destination verified {cd['pages_verified']} of {cd['pages_written'] - cd['pages_zero']} non-zero pages")
    if cs["main_eos"] < 2 or cs["main_zero_records"] == 0:
        out.append(f"the main channel observer saw {cs['main_eos']} RAM EOS and {cs['main_zero_records']} zero "
                   f"pages (expected >= 2 and > 0: {s_src['pages'].get('main-channel-note')})")
    # The unchanged filter's epoch rule rests on QEMU 7.2 sending a SYNC on
    # every channel before each RAM EOS on the main channel.
    if cs["multifd_sync_packets"] != a.multifd * cs["main_eos"]:
        out.append(f"{cs['multifd_sync_packets']} SYNC packets on {a.multifd} channels but {cs['main_eos']} RAM EOS "
                   "on the main channel: the epoch pairing the unchanged filter relies on does not hold")
    for feature, key in (("zero", "pages_zero"), ("dedupe", "pages_dedupe_hits"), ("unchanged", "pages_unchanged")):
        if not pol.get(feature) and cs[key] != 0:
            out.append(f"{feature} is off but {key} = {cs[key]}")
    if pol.get("codec") == "none" and cs["pages_compressed"] != 0:
        out.append(f"codec none but {cs['pages_compressed']} pages compressed")
    if pol.get("codec") != "none" and cs["pages_compressed"] == 0:
        out.append(f"codec {pol.get('codec')} compressed no page")
    if pol.get("dedupe") and cs["pages_dedupe_hits"] == 0:
        out.append("dedupe is on but found no duplicate (the guest holds many)")
    if a.expect_delta and cs["pages_delta"] == 0:
        out.append(f"no page went as PAGE_DELTA ({cs['pages_delta_bases']} found a base in the dictionary; "
                   f"the guest changes {a.lines} cache lines of the pages it dirties)")
    # Every PAGE_SAME was checked at the destination against what it had
    # delivered for the page (a refused one fails the session).
    if cd["pages_unchanged"] != cs["pages_unchanged"] or cd.get("pages_unchanged_refused", 0) != 0:
        out.append(f"the source sent {cs['pages_unchanged']} pages as PAGE_SAME, the destination checked "
                   f"{cd['pages_unchanged']} and refused {cd.get('pages_unchanged_refused')}")
    if a.expect_unchanged and cs["pages_unchanged"] == 0:
        out.append(f"the unchanged filter skipped no page ({cs['pages_unchanged_held']} held back by the epoch "
                   f"gate; {pol.get('unchanged-note', '')})")
    return out


def kill_destination(f: Fabric, kernel: Path, initrd: Path, a) -> int:
    with vm_pair(f, kernel, initrd, a, 9) as (src, dst, uri):
        # A slow migration (16 MiB/s) so the kill lands in the middle of it.
        src.set_migration({}, {"max-bandwidth": 16 << 20})
        src.execute("migrate", uri=uri)
        deadline = time.monotonic() + 60
        while f.src_daemon.session(9)["counters"]["qemu_bytes_in"] < 8 << 20:
            assert time.monotonic() < deadline, "the migration never got going"
            time.sleep(0.1)
        f.dst_daemon.kill()
        t_kill = time.monotonic()
        info = src.wait_migration(60)
        t_failed = time.monotonic() - t_kill
        s_src = f.src_daemon.wait_session(9, 30)
        problems = []
        if info["status"] != "failed":
            problems.append(f"source QEMU migration is {info['status']}, expected failed")
        if s_src["state"] != "failed" or "no packet from the peer" not in s_src.get("error", ""):
            problems.append(f"source session {s_src['state']}: {s_src.get('error')}")
        status = src.status()
        if status != "running":
            problems.append(f"source VM is {status}, expected running")
        mark = len(src.console())
        try:
            src.wait_console(r"MEMLOAD TICK \d+", 30, after=mark)
        except TimeoutError as e:
            problems.append(f"source guest stopped ticking: {e}")
        print(f"destination daemon killed: source QEMU {info['status']} after {t_failed:.1f} s, "
              f"source session {s_src['state']} ({s_src.get('error')}), source VM {status}")
        return report(problems, f.logs() if problems else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--kind", default="af_packet-veth")
    ap.add_argument("--ram", type=int, default=256, help="guest RAM, MiB")
    ap.add_argument("--guest-mib", type=int, default=128, help="MiB memload fills")
    ap.add_argument("--dirty", type=int, default=2000, help="pages/s memload dirties")
    ap.add_argument("--multifd", type=int, default=0, help="multifd channels (0: off)")
    ap.add_argument("--same", type=int, default=30, help="percent of dirtied pages rewritten identically")
    ap.add_argument("--pages", type=json.loads, default=None,
                    help='source page policy, e.g. \'{"codec": "zstd", "dedupe": false}\'')
    ap.add_argument("--expect-unchanged", action="store_true",
                    help="fail unless the unchanged filter skipped pages")
    ap.add_argument("--loss", type=float, default=0, help="percent of frames dropped at each host (XDP)")
    ap.add_argument("--kill-destination-daemon", action="store_true")
    ap.add_argument("--ping-pong", action="store_true", help="then migrate back (needs --vm)")
    ap.add_argument("--pause", type=float, default=0, help="ping-pong: seconds the guest runs on B")
    ap.add_argument("--vm", default=None, help="the VM's name for the source daemon's page store (then checked)")
    ap.add_argument("--lines", type=int, default=0, help="cache lines memload changes per dirtied page (0: whole page)")
    ap.add_argument("--hot", type=int, default=0, help="percent of pages that take 90 %% of memload's writes (0: uniform)")
    ap.add_argument("--expect-delta", action="store_true",
                    help="fail unless some pages went as PAGE_DELTA (use with --lines)")
    ap.add_argument("--expect-workers", type=int, default=0,
                    help="fail unless the session's pages went through this many workers on each side")
    ap.add_argument("--encrypt", choices=["required", "off", "none"], default="required",
                    help="the peer channel's --encrypt (none: no peer channel)")
    a = ap.parse_args()
    kernel, initrd = ensure_guest(a.build)
    with Fabric(a.build, a.kind, peer_channel=None if a.encrypt == "none" else a.encrypt) as f:
        if a.kill_destination_daemon:
            return kill_destination(f, kernel, initrd, a)
        if a.ping_pong:
            if not a.vm or a.encrypt == "none":
                print("--ping-pong needs --vm and the peer channel")
                return 2
            return ping_pong(f, kernel, initrd, a)
        return migrate_ok(f, kernel, initrd, a)


if __name__ == "__main__":
    sys.exit(main())
