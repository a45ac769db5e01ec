#!/usr/bin/python3
"""e2e: `memmotionctl migrate --libvirt` against a real libvirt.

Two hosts (network + mount namespaces, mmtest/libvirt.py), each with
Debian's libvirtd and a memmotiond; the test guest is a libvirt domain
(TCG, direct kernel boot) on the source host. On the same running domain:

  abort     SIGINT to memmotionctl mid-migration: it aborts the libvirt job
            (virDomainAbortJob); the domain keeps running on the source
  cancel    `memmotionctl cancel` mid-migration (the daemon closes the
            source QEMU's socket); the same
  kill      the destination daemon is killed mid-migration; the same
  migrate   libvirt migrates the domain peer-to-peer, 4 parallel connections
            (multifd) through the two daemons; suspended mid-way (after
            live precopy with the guest dirtying), the source's RAM is
            dumped, and the destination's, still paused after the
            migration, must be byte-identical; resumed, it runs on
  refusals  --tunnelled, --copy-storage-all and postcopy with parallel
            connections are refused before anything starts, naming the reason
  virsh-back  plain `virsh migrate --migrateuri unix:///run/memmotion/...`
            after `memmotionctl migrate` told the daemons (negotiate only):
            the domain goes back to the source through the daemons
  postcopy  one stream, paced, switched to postcopy by --postcopy-after
            (VIR_MIGRATE_POSTCOPY, virDomainMigrateStartPostCopy); the
            domain runs on at the destination

--compare (not a test: figures for the README) migrates the same domain
with plain `virsh migrate --parallel` over TCP and through the daemons
under one link cap, and prints libvirt's job time and the bytes of each."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest.compare import compare_dumps  # noqa: E402
from mmtest.fabric import DST_KERNEL_IP, SRC_KERNEL_IP, require_root  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.libvirt import LibvirtFabric, LibvirtHost, domain_xml, guest_ram_bytes  # noqa: E402
from mmtest.proc import report  # noqa: E402

DOM = "mmvm"
PEER = f"{DST_KERNEL_IP}:7471"
CONSOLE = f"/run/{DOM}.console"  # on whichever host runs the domain
problems: list[str] = []


def check(cond: bool, what: str) -> None:
    print(f"  {'ok  ' if cond else 'FAIL'} {what}", flush=True)
    if not cond:
        problems.append(what)


def console(lv: LibvirtHost) -> str:
    try:
        return lv.path(CONSOLE).read_text(errors="replace")
    except OSError:
        return ""


def wait_console(lv: LibvirtHost, pattern: str, timeout: float, after: int = 0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, console(lv)[after:]):
            return True
        time.sleep(0.2)
    return False


def ctl(f: LibvirtFabric, sid: int, *extra: str, timeout: float = 300, json_out: bool = False) -> subprocess.Popen:
    cmd = [str(f.build / "control" / "memmotionctl"), "--socket", f.src_daemon.control_path,
           "--timeout", str(timeout), *(["--json"] if json_out else []), "migrate", "--session", str(sid), "--peer", PEER,
           "--libvirt", DOM, "--connect", f.libvirt["src"].uri, "--dest-uri", f.libvirt["dst"].uri, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_bytes(f: LibvirtFabric, sid: int, n: int, p: subprocess.Popen, timeout: float = 90) -> bool:
    """Waits until the source daemon has read n bytes of the session from QEMU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if f.src_daemon.session(sid)["counters"]["qemu_bytes_in"] >= n:
                return True
        except Exception:
            pass  # the session does not exist yet
        time.sleep(0.1)
    return False


def still_on_source(f: LibvirtFabric, what: str) -> None:
    src, dst = f.libvirt["src"], f.libvirt["dst"]
    deadline = time.monotonic() + 30
    while src.domstate(DOM) != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    check(src.domstate(DOM) == "running", f"{what}: the domain is {src.domstate(DOM)} on the source")
    mark = len(console(src))
    check(wait_console(src, r"MEMLOAD TICK \d+", 30, mark), f"{what}: the source guest keeps running its workload")
    deadline = time.monotonic() + 30
    while DOM in dst.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    check(DOM not in dst.running(), f"{what}: no {DOM} left running on the destination")


def case_interrupted(f: LibvirtFabric, sid: int, how: str) -> None:
    print(f"{how}:")
    p = ctl(f, sid, "--max-bandwidth", "8000000", "--no-progress")
    got_going = wait_bytes(f, sid, 4 << 20, p)
    check(got_going, f"{how}: the migration got going through the daemons")
    if how == "abort":
        p.send_signal(signal.SIGINT)
    elif how == "cancel":
        c = subprocess.run([str(f.build / "control" / "memmotionctl"), "--socket", f.src_daemon.control_path,
                            "cancel", "--session", str(sid)], capture_output=True, text=True)
        check(c.returncode == 0, f"cancel accepted: {c.stderr.strip()}")
    else:
        f.dst_daemon.kill()
    out, err = p.communicate(timeout=180)
    check(p.returncode == 5, f"{how}: memmotionctl exits 5: {p.returncode}; {err.strip()[-400:]}")
    check("running on the source" in err, f"{how}: memmotionctl says where the domain is")
    if "has not ended the job" in err:
        # The destination QEMU waited at a multifd sync point (its daemon
        # died there): memmotionctl must have ended that paused copy.
        check("ended the destination's paused incoming copy" in err,
              f"{how}: memmotionctl ended the stuck incoming copy: {err.strip()[-300:]}")
    if how == "abort":
        check("aborted the libvirt job" in err, "abort: the libvirt job was aborted")
    s = f.src_daemon.wait_session(sid, 30)
    check(s["state"] in ("cancelled", "failed"), f"{how}: source session {s['state']} ({s.get('error')})")
    still_on_source(f, how)
    if how == "kill":
        f.replace_daemon("dst", f.daemon_args["dst"])
    else:
        d = f.dst_daemon.wait_session(sid, 30)
        check(d["state"] in ("cancelled", "failed"), f"{how}: destination session {d['state']} ({d.get('error')})")


def case_migrate(f: LibvirtFabric, a) -> None:
    print("migrate:")
    src, dst = f.libvirt["src"], f.libvirt["dst"]
    sid = 44
    # Paced (40 MB/s of wire bytes) so that the guest is still migrating
    # when the test suspends it.
    p = ctl(f, sid, "--parallel-connections", "4", "--max-bandwidth", "40000000", "--suspend",
            "--downtime-limit", "500")
    check(wait_bytes(f, sid, 48 << 20, p), "48 MiB went through the daemons live")
    # The guest dirtied pages while precopy ran; from here on its RAM is
    # still, and what the destination must end with.
    src.virsh("suspend", DOM)
    size = guest_ram_bytes(a.ram)
    a_dump = src.pmemsave(DOM, size, f.workdir / "src.ram")
    out, err = p.communicate(timeout=300)
    check(p.returncode == 0, f"memmotionctl migrate --libvirt exit {p.returncode}: {out.strip()} {err.strip()[-500:]}")
    check("libvirt: mmvm migrated in" in out, f"libvirt's job figures printed: {out.strip().splitlines()[:1]}")
    check("sent" in err and "/s" in err, "a progress display was shown")
    check("cannot set the downtime limit" not in err, "libvirt took the downtime limit")
    s = f.src_daemon.session(sid)
    check(s["state"] == "completed" and s["authenticated"], f"source session {s['state']}")
    check(s["counters"]["multifd_channels"] == 4, f"multifd channels relayed: {s['counters']['multifd_channels']}")
    d = f.dst_daemon.wait_session(sid, 30)
    check(d["state"] == "completed", f"destination session {d['state']}")
    check(src.domstate(DOM) == "shut off", f"the source domain is {src.domstate(DOM)} (defined, not running)")
    check(dst.domstate(DOM) == "paused", f"the destination domain is {dst.domstate(DOM)} (--suspend)")
    if dst.domstate(DOM) == "paused":
        b_dump = dst.pmemsave(DOM, size, f.workdir / "dst.ram")
        diff = compare_dumps(a_dump, b_dump)
        check(diff.identical, f"guest RAM {diff}")
        b_dump.unlink()
        mark = len(console(dst))
        dst.virsh("resume", DOM)
        check(dst.domstate(DOM) == "running", f"the destination domain is {dst.domstate(DOM)} after resume")
        check(wait_console(dst, r"MEMLOAD TICK \d+", 30, mark), "the guest runs its workload on the destination")
    a_dump.unlink()
    print(f"  {out.strip()}")


def case_postcopy(f: LibvirtFabric) -> None:
    """One stream (postcopy does not combine with multifd), paced below what
    precopy needs, switched to postcopy by memmotionctl's policy."""
    print("postcopy:")
    src, dst = f.libvirt["src"], f.libvirt["dst"]
    sid = 47
    p = ctl(f, sid, "--parallel-connections", "0", "--max-bandwidth", "20000000", "--postcopy-after", "1")
    out, err = p.communicate(timeout=300)
    check(p.returncode == 0, f"memmotionctl migrate --libvirt --postcopy-after exit {p.returncode}: {err.strip()[-500:]}")
    check("switched to postcopy" in err, "memmotionctl switched the job to postcopy")
    s = f.src_daemon.wait_session(sid, 30)
    check(s["state"] == "completed" and s["counters"]["multifd_channels"] == 0,
          f"source session {s['state']}, {s['counters']['multifd_channels']} multifd channels")
    check(dst.domstate(DOM) == "running", f"the domain is {dst.domstate(DOM)} on the destination")
    check(src.domstate(DOM) == "shut off", f"the source domain is {src.domstate(DOM)}")
    mark = len(console(dst))
    check(wait_console(dst, r"MEMLOAD TICK \d+", 30, mark), "the guest runs its workload on the destination")


def case_refusals(f: LibvirtFabric) -> None:
    print("refusals:")
    for extra, want in ((["--tunnelled"], "--tunnelled cannot go through memmotiond"),
                        (["--postcopy-after", "5"], "does not combine postcopy with multifd"),
                        (["--copy-storage-all"], "NBD")):
        p = ctl(f, 45, *extra, timeout=30)
        out, err = p.communicate(timeout=60)
        check(p.returncode == 2 and want in err, f"{' '.join(extra)} refused: {err.strip()}")
    check(f.src_daemon.ctl.execute("query-sessions") == [] or
          all(s["session"] != 45 for s in f.src_daemon.ctl.execute("query-sessions")),
          "a refused migration created no session")
    check(f.libvirt["src"].domstate(DOM) == "running", "the domain is untouched")


def job_figures(lv: LibvirtHost) -> dict:
    """virsh domjobinfo --completed, as numbers: time in ms, data in bytes."""
    out = lv.virsh("domjobinfo", DOM, "--completed")
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        m = re.match(r"\s*([0-9.]+)\s*(\w+)?", v)
        if not m:
            continue
        num, unit = float(m.group(1)), (m.group(2) or "")
        mult = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "B": 1}.get(unit, 1)
        res[k.strip()] = num * mult
    return res


def told_daemons(f: LibvirtFabric, sid: int, from_dst: bool, cap: int) -> str:
    """The documented plain-virsh path: memmotionctl only negotiates the
    session, the migration socket on both hosts the same path; returns it."""
    sock = f"/run/memmotion/plain-{sid}.sock"
    d = f.dst_daemon if from_dst else f.src_daemon
    peer = f"{SRC_KERNEL_IP}:7471" if from_dst else PEER
    cmd = [str(f.build / "control" / "memmotionctl"), "--socket", d.control_path, "migrate",
           "--session", str(sid), "--peer", peer, "--listen", f"unix:{sock}", "--dst-incoming", f"unix:{sock}",
           "--multifd-channels", "4"] + (["--max-bandwidth", str(cap)] if cap else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or sock not in r.stdout:
        raise RuntimeError(f"memmotionctl migrate (negotiate only): {r.stdout} {r.stderr}")
    return sock


def case_virsh_back(f: LibvirtFabric) -> None:
    """Plain `virsh migrate --migrateuri unix://...` through the daemons, the
    way back: the destination host's daemon is the source now."""
    print("virsh-back:")
    src, dst = f.libvirt["src"], f.libvirt["dst"]
    sid = 46
    sock = told_daemons(f, sid, from_dst=True, cap=0)
    r = subprocess.run(["virsh", "-c", dst.uri, "migrate", "--live", "--p2p", "--parallel", "--parallel-connections",
                        "4", DOM, src.uri, "--migrateuri", f"unix://{sock}"], capture_output=True, text=True,
                       timeout=300)
    check(r.returncode == 0, f"virsh migrate --migrateuri unix://{sock}: {r.stderr.strip()}")
    s = f.dst_daemon.wait_session(sid, 30)
    check(s["state"] == "completed" and s["counters"]["multifd_channels"] == 4,
          f"the daemon carried it: session {s['state']}, {s['counters']['multifd_channels']} multifd channels, "
          f"{s['counters']['wire_bytes_tx'] / 2**20:.1f} MiB on the wire")
    check(src.domstate(DOM) == "running", f"the domain is {src.domstate(DOM)} back on the source")
    mark = len(console(src))
    check(wait_console(src, r"MEMLOAD TICK \d+", 30, mark), "the guest runs its workload back on the source")


def compare(f: LibvirtFabric, a) -> None:
    """Same domain, in turn: virsh straight over TCP with --parallel (a veth
    of its own, tc tbf at the cap), through the daemons with memmotionctl
    --libvirt and with plain virsh to the daemons' socket (the MMP pacer at
    the cap); back to the source over TCP after each."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf" / "e2e"))
    from mmperf.link import QemuLink, tx_bytes
    from mmperf.link import DST_IP as TCP_DST, SRC_IP as TCP_SRC
    from mmperf.matrix import cap_bytes
    src, dst = f.libvirt["src"], f.libvirt["dst"]
    cap = cap_bytes(a.cap)
    link = QemuLink.create(f.src.netns, f.dst.netns, f.suffix, 9000)
    link.shape(cap)
    p4 = ["--live", "--p2p", "--parallel", "--parallel-connections", "4", DOM]

    def back() -> None:
        dst.virsh("migrate", *p4, src.uri, "--migrateuri", f"tcp://{TCP_SRC}")

    rows = []
    for i in range(a.runs):
        t = time.monotonic()
        tx0 = tx_bytes(f.src.netns, link.src_if)
        src.virsh("migrate", *p4, dst.uri, "--migrateuri", f"tcp://{TCP_DST}")
        wall = time.monotonic() - t
        tcp = job_figures(src)
        rows.append(("virsh, TCP", tcp.get("Time elapsed", 0), tcp.get("Data processed", 0),
                     tx_bytes(f.src.netns, link.src_if) - tx0, wall))
        back()
        t = time.monotonic()
        p = ctl(f, 60 + i, "--parallel-connections", "4", "--no-progress",
                *(["--max-bandwidth", str(cap)] if cap else []), json_out=True)
        out, err = p.communicate(timeout=300)
        wall = time.monotonic() - t
        if p.returncode != 0:
            raise RuntimeError(f"memmotionctl --libvirt: {err[-1000:]}")
        s = json.loads(out.strip().splitlines()[-1])
        rows.append(("memmotionctl --libvirt", s["libvirt"]["total-time-ms"], s["libvirt"]["transferred"],
                     s["counters"]["wire_bytes_tx"], wall))
        back()
        t = time.monotonic()
        sock = told_daemons(f, 70 + i, from_dst=False, cap=cap)
        src.virsh("migrate", *p4, dst.uri, "--migrateuri", f"unix://{sock}")
        wall = time.monotonic() - t
        vj = job_figures(src)
        s = f.src_daemon.wait_session(70 + i, 30)
        rows.append(("virsh, daemons' socket", vj.get("Time elapsed", 0), vj.get("Data processed", 0),
                     s["counters"]["wire_bytes_tx"], wall))
        back()
    print(f"{a.ram} MiB guest, memload {a.guest_mib} MiB dirtying {a.dirty} pages/s, 4 parallel connections, "
          f"link cap {a.cap}")
    print(f"{'path':26}{'libvirt job ms':>16}{'from QEMU MiB':>15}{'wire MiB':>10}{'wall s':>8}")
    for name, ms, q, w, wall in rows:
        print(f"{name:26}{ms:16.0f}{q / 2**20:15.1f}{w / 2**20:10.1f}{wall:8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--ram", type=int, default=256, help="guest RAM, MiB")
    ap.add_argument("--guest-mib", type=int, default=128, help="MiB memload fills")
    ap.add_argument("--dirty", type=int, default=2000, help="pages/s memload dirties")
    ap.add_argument("--compare", action="store_true", help="figures: virsh over TCP vs through the daemons")
    ap.add_argument("--runs", type=int, default=2, help="with --compare: runs of each")
    ap.add_argument("--cap", default="1G", help="with --compare: link cap, bits/s (1G, 10G, unlimited)")
    ap.add_argument("cases", nargs="*",
                    default=["refusals", "abort", "cancel", "kill", "migrate", "virsh-back", "postcopy"])
    a = ap.parse_args()
    a.build = a.build.resolve()  # commands run inside the hosts' mount namespaces
    require_root("the libvirt e2e test")
    kernel, initrd = ensure_guest(a.build)
    wd = Path(tempfile.mkdtemp(prefix="mm-lv-"))
    t0 = time.monotonic()
    key = wd / "peer.key"
    key.write_text("a" * 40)
    key.chmod(0o600)
    with LibvirtFabric(a.build, "af_packet-veth", workdir=wd, daemon_args={
            "src": ["--key-file", str(key), "--peer-listen", f"{SRC_KERNEL_IP}:7471"],
            "dst": ["--key-file", str(key), "--peer-listen", PEER]}) as f:
        src = f.libvirt["src"]
        xml = wd / f"{DOM}.xml"
        xml.write_text(domain_xml(DOM, kernel, initrd, a.ram, f"memload.mib={a.guest_mib} "
                                  f"memload.dirty={a.dirty} memload.same=30", CONSOLE))
        print(f"two libvirt hosts and daemons up in {time.monotonic() - t0:.1f} s")
        src.virsh("define", str(xml))
        src.virsh("start", DOM)
        if not wait_console(src, r"MEMLOAD READY", 180):
            check(False, f"the guest booted under libvirt: {console(src)[-800:]!r}")
            return report(problems, f.logs())
        print(f"the guest booted under libvirt in {time.monotonic() - t0:.1f} s")
        if a.compare:
            compare(f, a)
            return 0
        for c in a.cases:
            if c == "refusals":
                case_refusals(f)
            elif c in ("abort", "cancel", "kill"):
                case_interrupted(f, {"abort": 41, "cancel": 42, "kill": 43}[c], c)
            elif c == "migrate":
                case_migrate(f, a)
            elif c == "virsh-back":
                case_virsh_back(f)
            elif c == "postcopy":
                case_postcopy(f)
        return report(problems, f.logs() if problems else "")


if __name__ == "__main__":
    sys.exit(main())
