#!/usr/bin/python3
"""e2e: the control plane as an operator uses it.

  orchestrated  `memmotionctl migrate` alone drives a real QEMU migration (multifd, 4 channels): the
                daemons authenticate each other over the peer channel, set up
                both QEMUs over QMP (destination started with -incoming defer),
                follow progress; RAM byte-identical after; the Prometheus
                endpoint, scraped during the migration, shows moving counters
  postcopy      the same with a postcopy policy that switches a migration
                which has not converged (a paced, dirtying guest)
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


def vms(f: Fabric, kernel: Path, initrd: Path, a, tag: str, dirty: int):
    append = f"memload.mib={a.guest_mib} memload.dirty={dirty} memload.same=30"
    src = Vm(f"{tag}-src", f.workdir, kernel, initrd, a.ram, append, netns=f.src.netns)
    dst = Vm(f"{tag}-dst", f.workdir, kernel, initrd, a.ram, append, incoming="defer", paused=True,
             netns=f.dst.netns)
    return src, dst


def case_orchestrated(f: Fabric, kernel: Path, initrd: Path, a, postcopy: bool) -> None:
    tag = "pc" if postcopy else "orch"
    sid = 22 if postcopy else 21
    print("postcopy:" if postcopy else "orchestrated:")
    src, dst = vms(f, kernel, initrd, a, tag, dirty=20000 if postcopy else a.dirty)
    with src, dst:
        src.wait_console(r"MEMLOAD READY", 180)
        args = ["migrate", "--session", str(sid), "--peer", PEER, "--src-qmp", src.mgmt_qmp_path,
                "--dst-qmp", dst.mgmt_qmp_path]
        if postcopy:
            # Paced below the guest's dirty rate: precopy cannot converge.
            args += ["--max-bandwidth", "40000000", "--postcopy-after", "1.5"]
        else:
            # Paced to ~3 s so that the metrics are scraped several times
            # while the migration runs.
            args += ["--multifd-channels", "4", "--max-bandwidth", "60000000"]
        watcher = ControlClient(f.src_daemon.control_path)
        p = ctl(f, *args)
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
            check("switched to postcopy" in f.src_daemon.log_text(), "the policy switched to postcopy")
        if p.returncode == 0:
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
                case_orchestrated(f, kernel, initrd, a, postcopy=False)
            elif c == "postcopy":
                case_orchestrated(f, kernel, initrd, a, postcopy=True)
            elif c == "cancel":
                case_cancel(f, kernel, initrd, a)
            elif c == "refusals":
                case_refusals(f, a)
        return report(problems, f.logs() if problems else "")


if __name__ == "__main__":
    sys.exit(main())
