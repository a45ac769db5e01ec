#!/usr/bin/python3
"""e2e: the multifd parser on real QEMU 7.2 channels. A source QEMU migrates
with multifd (3 channels) into a capturing listener; every captured multifd
channel must parse from MultiFDInit to its last packet with no error, carry
pages and SYNC packets, and the channel ids must be 0..2."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.proc import report  # noqa: E402
from mmtest.vm import Vm  # noqa: E402

CHANNELS = 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", required=True, type=Path)
    a = ap.parse_args()
    kernel, initrd = ensure_guest(a.build)
    wd = Path(tempfile.mkdtemp(prefix="mm-mfd-"))
    path = str(wd / "capture.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    files: list[Path] = []

    def drain(conn: socket.socket, out: Path) -> None:
        with open(out, "wb") as f:
            while True:
                d = conn.recv(1 << 20)
                if not d:
                    return
                f.write(d)

    threads = []

    def accept_all() -> None:
        for i in range(1 + CHANNELS):
            conn, _ = srv.accept()
            out = wd / f"conn{i}.bin"
            files.append(out)
            t = threading.Thread(target=drain, args=(conn, out), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept_all, daemon=True)
    acceptor.start()
    problems = []
    with Vm("mfd-src", wd, kernel, initrd, 256, "memload.mib=96 memload.dirty=500") as vm:
        vm.wait_console(r"MEMLOAD READY", 180)
        vm.set_migration({"multifd": True}, {"multifd-channels": CHANNELS, "max-bandwidth": 10 << 30})
        vm.execute("migrate", uri=f"unix:{path}")
        info = vm.wait_migration(120)
        if info["status"] != "completed":
            problems.append(f"capture migration {info['status']}: {info.get('error-desc')}")
    acceptor.join(10)
    for t in threads:
        t.join(30)
    multifd = [f for f in files if f.read_bytes()[:4] == bytes.fromhex("11223344")]
    main_ch = [f for f in files if f.read_bytes()[:4] == b"QEVM"]
    if len(multifd) != CHANNELS or len(main_ch) != 1:
        problems.append(f"expected 1 main + {CHANNELS} multifd channels, got {len(main_ch)} + {len(multifd)}")
    r = subprocess.run([str(a.build / "tests" / "e2e" / "mm-multifd-check")] + [str(f) for f in multifd],
                       capture_output=True, text=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        problems.append(f"the parser refused a real channel: {r.stdout.strip()}")
    ids = sorted(int(line.split("channel ")[1].split(":")[0]) for line in r.stdout.splitlines() if "channel " in line)
    if r.returncode == 0 and ids != list(range(CHANNELS)):
        problems.append(f"channel ids {ids}")
    for line in r.stdout.splitlines():
        if " 0 pages" in line or " 0 syncs" in line:
            problems.append(f"a channel without pages or syncs: {line}")
    return report(problems)


if __name__ == "__main__":
    sys.exit(main())
