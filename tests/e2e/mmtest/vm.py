"""A real QEMU VM (qemu-system-x86_64, TCG) running the test guest, driven
over QMP; optionally inside a network namespace."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from .proc import quit_and_reap
from .qmp import Qmp

QEMU = "/usr/bin/qemu-system-x86_64"
# QEMU 7.2 under TCG loses guest writes during migration when a RAM block's
# size is a multiple of 256 KiB: the dirty-bitmap fast path forgets to re-arm
# TCG's write tracking (fixed upstream in 9.0, commit 03bfc2188f "physmem:
# Fix migration dirty bitmap coherency with TCG memory access"; Debian's 7.2
# lacks it). 8 KiB more RAM sends QEMU down the per-page path, which is right.
TCG_RAM_PAD_KIB = 8


class Vm:
    def __init__(self, name: str, workdir: Path, kernel: Path, initrd: Path, ram_mib: int = 256,
                 append: str = "", incoming: str | None = None, paused: bool = False,
                 netns: str | None = None, console_input: bool = False):
        if not os.path.exists(QEMU):
            raise SystemExit(f"{QEMU} is missing (apt-get install qemu-system-x86)")
        self.name = name
        self.workdir = Path(workdir)
        self.ram_mib = ram_mib
        self.ram_bytes = (ram_mib << 20) + (TCG_RAM_PAD_KIB << 10)
        self.qmp_path = str(self.workdir / f"{name}.qmp")
        # A second QMP monitor for a manager (memmotiond's QMP driver): a
        # QEMU monitor serves one client at a time, and the test holds the first.
        self.mgmt_qmp_path = str(self.workdir / f"{name}.mgmt.qmp")
        self.console_path = self.workdir / f"{name}.console"
        # debug-threads: vCPU threads are named "CPU n/TCG", so a meter can
        # tell the guest's own CPU time from QEMU's migration work.
        cmd = [QEMU, "-name", f"{name},debug-threads=on", "-accel", "tcg", "-machine", "pc", "-cpu", "qemu64",
               "-m", f"{self.ram_bytes >> 10}k", "-smp", "1", "-nodefaults", "-nographic", "-vga", "none",
               "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
               "-append", f"console=ttyS0 quiet panic=-1 {append}".strip(),
               "-chardev", f"file,id=con,path={self.console_path}", "-serial", "chardev:con",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-qmp", f"unix:{self.mgmt_qmp_path},server=on,wait=off"]
        # console_input: a second serial port (the guest's ttyS1, where
        # memload reads commands) on a socket the test writes to.
        self.cmd_path = str(self.workdir / f"{name}.cmd.sock")
        self._cmd_sock = None
        if console_input:
            cmd += ["-chardev", f"socket,id=cmd,path={self.cmd_path},server=on,wait=off", "-serial", "chardev:cmd"]
        if incoming:
            cmd += ["-incoming", incoming]
        # MM_QEMU_TRACE=<dir>: QEMU's multifd trace events into <dir> (debugging aid).
        if os.environ.get("MM_QEMU_TRACE"):
            trace = Path(os.environ["MM_QEMU_TRACE"]) / f"{name}-{os.getpid()}-{time.time_ns()}.trace"
            trace.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["-trace", "enable=multifd_*", "-trace", f"file={trace}"]
        if paused:
            cmd += ["-S"]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None
        self.qmp: Qmp | None = None

    def start(self) -> "Vm":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.workdir / f"{self.name}.qemu.log", "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU {self.name} exited: {self.qemu_log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"QEMU {self.name} opened no QMP socket")
            time.sleep(0.05)
        self.qmp = Qmp(self.qmp_path)
        return self

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def qemu_log(self) -> str:
        try:
            return (self.workdir / f"{self.name}.qemu.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait_console(self, pattern: str, timeout: float, after: int = 0) -> re.Match:
        """Waits for a regex on the serial console (from offset `after`)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console(), after)
            if m:
                return m
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"QEMU {self.name} exited while waiting for {pattern!r}: "
                                   f"{self.qemu_log()}\nconsole: {self.console()[-1000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {pattern!r} on the console in {timeout} s; "
                                   f"console tail: {self.console()[-800:]!r}")
            time.sleep(0.1)

    def execute(self, cmd: str, **args):
        assert self.qmp is not None
        return self.qmp.execute(cmd, **args)

    def send_console(self, text: str) -> None:
        """Types text on the guest's command port, ttyS1 (needs
        console_input); the connection stays open, so nothing is cut off."""
        import socket
        if self._cmd_sock is None:
            self._cmd_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._cmd_sock.connect(self.cmd_path)
        self._cmd_sock.sendall(text.encode())

    def status(self) -> str:
        return self.execute("query-status")["status"]

    def set_migration(self, capabilities: dict[str, bool], parameters: dict) -> None:
        if capabilities:
            self.execute("migrate-set-capabilities", capabilities=[
                {"capability": k, "state": v} for k, v in capabilities.items()])
        if parameters:
            self.execute("migrate-set-parameters", **parameters)

    def query_migrate(self) -> dict:
        return self.execute("query-migrate")

    def wait_migration(self, timeout: float) -> dict:
        """Polls query-migrate until completed/failed/cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.query_migrate()
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: migration still {info.get('status')} after "
                                   f"{timeout} s: {info}")
            time.sleep(0.05)

    def pmemsave(self, path: Path) -> Path:
        """Dumps all guest RAM (physical 0 .. ram size) to path."""
        self.execute("pmemsave", val=0, size=self.ram_bytes, filename=str(path))
        return path

    def stop(self) -> None:
        if self._cmd_sock is not None:
            self._cmd_sock.close()
            self._cmd_sock = None
        quit_and_reap(self.qmp, self.proc)
        self.qmp = None
        if hasattr(self, "log"):
            self.log.close()

    def __enter__(self) -> "Vm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
