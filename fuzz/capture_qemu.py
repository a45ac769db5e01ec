#!/usr/bin/python3
"""Captures real QEMU 7.2 migration channels as fuzz seeds (README.md
"Seeds"): a firmware-only VM (no guest: SeaBIOS runs and finds nothing to
boot) migrates with multifd (2 channels) into a listener that keeps every
connection's bytes. Writes fuzz/corpus/fuzz_main_channel/qemu-* (the whole channel and its
first 16 KiB) and
fuzz/corpus/fuzz_multifd/qemu-* (whole packets up to a size that keeps the
fuzzer fast, and each channel's SYNC packets alone).

  fuzz/capture_qemu.py [--out fuzz/corpus]"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from mmtest.qmp import Qmp  # noqa: E402

CHANNELS = 2
MAX_SEED = 256 << 10
INIT = 64       # MultiFDInit_t (dataplane/qemu/MultifdPacket.hpp)
FIXED = 320     # MultiFDPacket_t up to ramblock[256]


def packets(ch: bytes):
    """(start, end, normal_pages) of each whole packet after the init."""
    pos = INIT
    while pos + 16 <= len(ch):
        _magic, _ver, _flags, pages_alloc = struct.unpack_from(">IIII", ch, pos)
        normal, next_size = struct.unpack_from(">II", ch, pos + 16)
        end = pos + FIXED + 8 * pages_alloc + (next_size if normal else 0)
        if end > len(ch):
            return
        yield pos, end, normal
        pos = end


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus")
    a = ap.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="mm-fuzz-cap-"))
    path, qmp_path = str(wd / "cap.sock"), str(wd / "qmp.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    conns: list[bytearray] = []

    def drain(c: socket.socket, buf: bytearray) -> None:
        while d := c.recv(1 << 20):
            buf += d

    threads = []

    def accept_all() -> None:
        for _ in range(1 + CHANNELS):
            c, _ = srv.accept()
            buf = bytearray()
            conns.append(buf)
            t = threading.Thread(target=drain, args=(c, buf), daemon=True)
            t.start()
            threads.append(t)

    threading.Thread(target=accept_all, daemon=True).start()
    qemu = subprocess.Popen(["qemu-system-x86_64", "-nodefaults", "-nographic", "-machine", "pc-i440fx-7.2",
                             "-accel", "tcg", "-m", "64", "-qmp", f"unix:{qmp_path},server=on,wait=off",
                             "-serial", "none", "-monitor", "none"], stdout=subprocess.DEVNULL)
    try:
        q = Qmp(qmp_path)
        time.sleep(1.0)  # let the firmware write some RAM
        q.execute("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        q.execute("migrate-set-parameters", **{"multifd-channels": CHANNELS, "max-bandwidth": 1 << 30})
        q.execute("migrate", uri=f"unix:{path}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = q.execute("query-migrate").get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        if st != "completed":
            print(f"capture: migration {st}", file=sys.stderr)
            return 1
    finally:
        qemu.kill()
        qemu.wait()
    for t in threads:
        t.join(10)
    main_ch = [bytes(c) for c in conns if c[:4] == b"QEVM"]
    multifd = [bytes(c) for c in conns if c[:4] == bytes.fromhex("11223344")]
    if len(main_ch) != 1 or len(multifd) != CHANNELS:
        print(f"capture: {len(main_ch)} main and {len(multifd)} multifd channels", file=sys.stderr)
        return 1
    (a.out / "fuzz_main_channel").mkdir(parents=True, exist_ok=True)
    (a.out / "fuzz_multifd").mkdir(parents=True, exist_ok=True)
    # The main channel's first byte is the split seed of fuzz_main_channel.cpp.
    (a.out / "fuzz_main_channel" / "qemu-main").write_bytes(b"\x01" + main_ch[0][:MAX_SEED])
    (a.out / "fuzz_main_channel" / "qemu-main-head").write_bytes(b"\x03" + main_ch[0][:16 << 10])
    if len(main_ch[0]) > MAX_SEED:
        (a.out / "fuzz_main_channel" / "qemu-main-tail").write_bytes(b"\x02" + main_ch[0][-MAX_SEED:])
    for i, ch in enumerate(multifd):
        head, syncs = bytearray(ch[:INIT]), bytearray(ch[:INIT])
        for start, end, normal in packets(ch):
            if len(head) + end - start <= MAX_SEED:
                head += ch[start:end]
            if normal == 0:
                syncs += ch[start:end]
        (a.out / "fuzz_multifd" / f"qemu-channel{i}").write_bytes(bytes(head))
        (a.out / "fuzz_multifd" / f"qemu-channel{i}-syncs").write_bytes(bytes(syncs))
    print(f"main channel {len(main_ch[0])} bytes, multifd {[len(c) for c in multifd]} bytes; seeds in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
