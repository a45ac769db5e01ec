#!/usr/bin/python3
"""e2e: the control plane as an operator uses it.

  orchestrated  `memmotionctl migrate` alone drives a real QEMU migration (multifd, 4 channels): the
                daemons authenticate each other over the peer channel, set up
                both QEMUs over QMP (destination started with -incoming defer),
                follow progress; RAM byte-identical after; the Prometheus
                endpoint, scraped during the migration, shows moving counters
  postcopy      the same with a postcopy policy that switches a migration
                which has not converged (a paced, dirtying guest), without
                QEMU's postcopy-preempt channel: page requests counted
  postcopy_first  --switchover-after 0: postcopy at once; the preempt channel
                on its priority stream, every answered page request timed
  postcopy_watchdog  --switchover-after 60 on a guest that dirties faster
                than the link: the convergence watchdog switches, and says why
  cancel        cancel mid-migration: the source VM keeps running, unharmed
  refusals      wrong key, no key, MTU mismatch: the session is refused with
                an error naming the cause and both sides' values"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest import flow  # noqa: E402
from mmtest.daemon import ControlClient  # noqa: E402
from mmtest.fabric import DST_KERNEL_IP, Fabric  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.proc import report  # noqa: E402
from mmtest.vm import Vm  # noqa: E402

PEER = f"{DST_KERNEL_IP}:7471"
METRICS = "127.0.0.1:9470"
problems: list[str] = []


def check(cond: bool, what: str) -> None:
    print(f"  {'ok  ' if cond else 'FAIL'} {what}", flush=True)
    if not cond:
        problems.append(what)


def key_file(path: Path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def ctl(f: Fabric, *args: str, timeout: float = 300) -> subprocess.Popen:
    return subprocess.Popen([str(f.build / "control" / "memmotionctl"), "--socket",
                             f.src_daemon.control_path, "--timeout", str(timeout), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def scrape(f: Fabric) -> dict[str, float]:
    code = ("import urllib.request;print(urllib.request.urlopen('http://%s/metrics', timeout=5)"
            ".read().decode())" % METRICS)
    r = f.exec(f.src, [sys.executable, "-c", code], timeout=30)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^([a-z_]+)\{([^}]*)\} ([0-9.e+]+)$", line)
        if m:
            out[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return out


def vms(f: Fabric, kernel: Path, initrd: Path, a, tag: str, dirty: int, console_input: bool = False):
    append = f"memload.mib={a.guest_mib} memload.dirty={dirty} memload.same=30"
    # (both with the command port: a migration needs the same devices)
    src = Vm(f"{tag}-src", f.workdir, kernel, initrd, a.ram, append, netns=f.src.netns, console_input=console_input)
    dst = Vm(f"{tag}-dst", f.workdir, kernel, initrd, a.ram, append, incoming="defer", paused=True,
             netns=f.dst.netns, console_input=console_input)
    return src, dst


def postcopy_guest(dst: Vm, p: subprocess.Popen, t0: float) -> float:
    """Postcopy: the destination daemon starts the VM at the switchover;
    the guest then times its first touches of random pages (console 'T').
    Returns the time from the migrate request until the destination ran."""
    while dst.status() != "running":
        if p.poll() is not None or time.monotonic() - t0 > 120:
            check(False, f"the destination VM runs during postcopy: {dst.status()}")
            return -1
        time.sleep(0.02)
    ran = time.monotonic() - t0
    check(True, f"the destination VM ran {ran:.2f} s after the migrate request")
    dst.send_console("T\n")  # a line: the tty is canonical
    m = dst.wait_console(r"MEMLOAD TOUCH n=(\d+) p50_us=([0-9.]+) p99_us=([0-9.]+) max_us=([0-9.]+) bad=(\d+)", 120)
    check(m.group(5) == "0", f"the guest timed {m.group(1)} first touches at the destination: p50 {m.group(2)} us, "
                             f"p99 {m.group(3)} us, max {m.group(4)} us; pages with other bytes than it wrote: {m.group(5)}")
    return ran


def postcopy_verify(src: Vm, dst: Vm) -> None:
    """The guest ran at the destination, so its RAM is no longer the
    source's: it checks every page against what it wrote itself."""
    check(src.status() == "postmigrate", f"source VM is {src.status()}, expected postmigrate")
    check(dst.status() == "running", f"destination VM is {dst.status()}, expected running")
    after = len(dst.console())
    dst.send_console("V\n")
    m = dst.wait_console(r"MEMLOAD VERIFY pages=(\d+) bad=(\d+) first_bad=(-?\d+)", 180, after)
    check(m.group(2) == "0", f"the guest checked all {m.group(1)} of its pages at the destination: {m.group(2)} with "
                             f"other bytes than it wrote (first {m.group(3)})")


# Postcopy policies: migrate arguments, the session id, the decision the
# daemon must report, whether the preempt channel is used.
POSTCOPY = {
    # Paced below the guest's dirty rate: precopy cannot converge.
    "postcopy": (["--max-bandwidth", "40000000", "--postcopy-after", "1.5", "--no-preempt"], 22,
                 "precopy did not converge in 1.5 s", False),
    "postcopy_first": (["--max-bandwidth", "40000000", "--switchover-after", "0"], 24, "postcopy-first", True),
    "postcopy_watchdog": (["--max-bandwidth", "40000000", "--switchover-after", "60"], 25, "convergence watchdog", True),
}


def case_orchestrated(f: Fabric, kernel: Path, initrd: Path, a, mode: str = "") -> None:
    postcopy = bool(mode)
    tag = mode.replace("postcopy", "pc") if postcopy else "orch"
    sid = POSTCOPY[mode][1] if postcopy else 21
    print(f"{mode}:" if postcopy else "orchestrated:")
    src, dst = vms(f, kernel, initrd, a, tag, dirty=20000 if postcopy else a.dirty, console_input=postcopy)
    with src, dst:
        src.wait_console(r"MEMLOAD READY", 180)
        args = ["migrate", "--session", str(sid), "--peer", PEER, "--src-qmp", src.mgmt_qmp_path,
                "--dst-qmp", dst.mgmt_qmp_path]
        if postcopy:
            args += POSTCOPY[mode][0]
        else:
            # Paced to ~3 s so that the metrics are scraped several times
            # while the migration runs.
            args += ["--multifd-channels", "4", "--max-bandwidth", "60000000"]
        watcher = ControlClient(f.src_daemon.control_path)
        t0 = time.monotonic()
        p = ctl(f, *args)
        if postcopy:
            postcopy_guest(dst, p, t0)
        samples = []
        while p.poll() is None and len(samples) < 3 and not postcopy:
            time.sleep(0.3)
            m = scrape(f)
            key = next((k for k in m if k.startswith("memmotion_session_qemu_bytes_in_total") and
                        f'session="{sid}"' in k), None)
            if key:
                samples.append(m[key])
        out, err = p.communicate(timeout=300)
        check(p.returncode == 0, f"memmotionctl migrate exit {p.returncode}: {out.strip()} {err.strip()[-300:]}")
        events = watcher.wait_events(10, lambda ev: any(e["data"].get("state") == "completed" for e in ev))
        states = [e["data"]["state"] for e in events if e["data"].get("session") == sid]
        watcher.close()
        want = ["negotiating", "precopy", "postcopy" if postcopy else "completing", "completed"]
        check(all(w in states for w in want) and states[-1] == "completed",
              f"SESSION_STATE events went {' -> '.join(dict.fromkeys(states))}")
        check("sent" in err and "/s" in err, "a progress display was shown")
        if not postcopy:
            check(len(samples) >= 2 and samples[-1] > samples[0],
                  f"metrics scraped during the migration moved: {samples}")
        s = f.src_daemon.session(sid)
        check(s["state"] == "completed" and s["authenticated"], f"source session {s['state']}, authenticated {s['authenticated']}")
        want_mfd = 0 if postcopy else 4
        check(s["counters"]["multifd_channels"] == want_mfd,
              f"multifd channels relayed: {s['counters']['multifd_channels']} (asked {want_mfd})")
        if postcopy:
            check(s["progress"].get("qemu-status") in ("completed", "postcopy-active"),
                  f"QEMU went through postcopy: {s['progress'].get('qemu-status')}")
            _, _, decision, preempt = POSTCOPY[mode]
            check(decision in s.get("postcopy-decision", "") and "switched to postcopy" in f.src_daemon.log_text(),
                  f"the policy switched to postcopy: {s.get('postcopy-decision')}")
            check(any(e["data"].get("decision") for e in events if e["data"].get("session") == sid),
                  "the decision was in the session's events")
            d = f.dst_daemon.session(sid)
            fa = d.get("faults", {})
            print(f"  destination faults: {fa}; preempt channel {s['counters']['preempt_bytes']} bytes; return path {d['counters']['qemu_bytes_in']} bytes; {s['progress']}")
            check(s["postcopy-preempt"] == preempt and d["postcopy-preempt"] == preempt,
                  f"postcopy-preempt at both ends: {s['postcopy-preempt']}, {d['postcopy-preempt']} (asked {preempt})")
            check(fa.get("requests", 0) > 0, f"the destination read page requests on the return path: {fa.get('requests')}")
            if preempt:
                check(s["counters"]["preempt_bytes"] > 0 and d["counters"]["preempt_bytes"] == s["counters"]["preempt_bytes"],
                      f"the preempt channel carried {s['counters']['preempt_bytes']} bytes from the source QEMU, "
                      f"{d['counters']['preempt_bytes']} to the destination QEMU")
                check(fa.get("timed", 0) > 0 and 0 < fa["p50-us"] <= fa["p99-us"] <= fa["max-us"],
                      f"page requests timed until their page came: {fa.get('timed')}, p50 {fa.get('p50-us')} us, "
                      f"p99 {fa.get('p99-us')} us")
                check(fa["timed"] + fa["unmatched"] + fa["dropped"] == fa["requests"],
                      f"every request was timed, answered elsewhere or dropped: {fa['timed']} + {fa['unmatched']} + "
                      f"{fa['dropped']} of {fa['requests']}")
            else:
                check(s["counters"]["preempt_bytes"] == 0 and fa.get("timed") == 0,
                      f"no preempt channel: {s['counters']['preempt_bytes']} bytes, {fa.get('timed')} timed")
        if p.returncode == 0 and postcopy:
            postcopy_verify(src, dst)
        elif p.returncode == 0:
            try:
                check(True, flow.verify(src, dst, f.workdir))
            except AssertionError as e:
                check(False, str(e))


def case_cancel(f: Fabric, kernel: Path, initrd: Path, a) -> None:
    print("cancel:")
    src, dst = vms(f, kernel, initrd, a, "cancel", dirty=a.dirty)
    with src, dst:
        src.wait_console(r"MEMLOAD READY", 180)
        p = ctl(f, "migrate", "--session", "23", "--peer", PEER, "--src-qmp", src.mgmt_qmp_path,
                "--dst-qmp", dst.mgmt_qmp_path, "--max-bandwidth", "8000000", "--no-progress")
        time.sleep(2.0)
        c = subprocess.run([str(f.build / "control" / "memmotionctl"), "--socket", f.src_daemon.control_path,
                            "cancel", "--session", "23"], capture_output=True, text=True)
        check(c.returncode == 0, f"cancel accepted: {c.stderr.strip()}")
        out, err = p.communicate(timeout=120)
        check(p.returncode == 5, f"memmotionctl migrate exits 5 after a cancel: {p.returncode}")
        info = src.wait_migration(30)
        check(info["status"] in ("cancelled", "failed"), f"source QEMU migration {info['status']}")
        check(src.status() == "running", f"source VM {src.status()}")
        mark = len(src.console())
        try:
            src.wait_console(r"MEMLOAD TICK \d+", 30, after=mark)
            check(True, "the source guest keeps running its workload")
        except TimeoutError as e:
            check(False, str(e))
        s = f.dst_daemon.wait_session(23, 15)
        check(s["state"] == "cancelled", f"the destination heard the cancel: {s['state']} ({s.get('error')})")


def case_refusals(f: Fabric, a) -> None:
    print("refusals:")
    base = ["--peer-listen", PEER]
    f.replace_daemon("dst", base + ["--key-file", key_file(f.workdir / "other.key", "b" * 40)])
    p = ctl(f, "migrate", "--session", "31", "--peer", PEER, "--dst-incoming", "unix:/tmp/none.sock", timeout=30)
    out, err = p.communicate(timeout=60)
    check(p.returncode == 1 and "AuthError" in err and "pre-shared key" in err, f"wrong key: {err.strip()}")
    check(f.dst_daemon.ctl.execute("query-sessions") == [], "the destination created no session")
    f.replace_daemon("dst", base)
    p = ctl(f, "migrate", "--session", "32", "--peer", PEER, "--dst-incoming", "unix:/tmp/none.sock", timeout=30)
    out, err = p.communicate(timeout=60)
    check(p.returncode == 1 and "no pre-shared key" in err, f"destination without a key: {err.strip()}")
    f.replace_daemon("dst", base + ["--key-file", f.key], profile="af_packet-veth-mtu1500")
    p = ctl(f, "migrate", "--session", "33", "--peer", PEER, "--dst-incoming", "unix:/tmp/none.sock", timeout=30)
    out, err = p.communicate(timeout=60)
    check(p.returncode == 1 and "fabric MTU mismatch: source 9000, destination 1500" in err,
          f"MTU mismatch names both values: {err.strip()}")
    loose = f.workdir / "loose.key"
    loose.write_text("c" * 40)
    os.chmod(loose, 0o644)
    r = subprocess.run([str(f.build / "control" / "memmotiond"), "--profile", "memif", "--ip", "10.9.9.9",
                        "--key-file", str(loose)], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "accessible by group or others (mode 0644)" in r.stderr,
          f"a key file others can read is refused: {r.stderr.strip()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--ram", type=int, default=256)
    ap.add_argument("--guest-mib", type=int, default=128)
    ap.add_argument("--dirty", type=int, default=2000)
    ap.add_argument("cases", nargs="*", default=["orchestrated", "postcopy", "cancel", "refusals"])
    a = ap.parse_args()
    kernel, initrd = ensure_guest(a.build)
    import tempfile
    wd = Path(tempfile.mkdtemp(prefix="mm-cp-"))
    key = key_file(wd / "peer.key", "a" * 40)
    with Fabric(a.build, "af_packet-veth", workdir=wd, daemon_args={
            "src": ["--key-file", key, "--metrics", METRICS],
            "dst": ["--key-file", key, "--peer-listen", PEER]}) as f:
        f.key = key
        for c in a.cases:
            if c == "orchestrated":
                case_orchestrated(f, kernel, initrd, a)
            elif c in POSTCOPY:
                case_orchestrated(f, kernel, initrd, a, c)
            elif c == "cancel":
                case_cancel(f, kernel, initrd, a)
            elif c == "refusals":
                case_refusals(f, a)
        return report(problems, f.logs() if problems else "")


if __name__ == "__main__":
    sys.exit(main())
