"""memmotiond processes for tests: start one inside a network namespace on
a NIC profile, talk to its control socket, stop it, and read its log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .proc import quit_and_reap


class ControlError(Exception):
    """The daemon answered a request with {"error": {"class", "desc"}}."""

    def __init__(self, cls: str, desc: str):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class ControlClient:
    """A QMP-style client of memmotiond's control socket (one JSON per line)."""

    def __init__(self, path: str, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events: list[dict] = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError(f"{path} did not greet like memmotiond: {greeting}")

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("memmotiond closed the control connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data: bytes) -> dict:
        """Sends bytes as they are and returns the next reply (not event)."""
        self.sock.sendall(data)
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def execute(self, cmd: str, **args) -> dict:
        req = {"execute": cmd}
        if args:
            req["arguments"] = args
        reply = self.send_raw((json.dumps(req) + "\n").encode())
        if "error" in reply:
            raise ControlError(reply["error"]["class"], reply["error"]["desc"])
        return reply["return"]

    def wait_events(self, timeout: float, until=lambda events: False) -> list[dict]:
        """Collects asynchronous events for up to `timeout` s, or until
        `until(events)` holds."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while not until(self.events) and time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    msg = self._read()
                except (socket.timeout, TimeoutError):
                    break
                if "event" in msg:
                    self.events.append(msg)
        finally:
            self.sock.settimeout(old)
        return self.events

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """One memmotiond. `netns` runs it inside that namespace (None: here)."""

    def __init__(self, binary: Path, workdir: Path, name: str, profile: str, ip: str,
                 sets: dict[str, str] | None = None, netns: str | None = None,
                 udp_port: int | None = None, extra: list[str] | None = None,
                 prefix: list[str] | None = None):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.name = name
        self.control_path = str(self.workdir / f"{name}.ctl")
        self.log_path = self.workdir / f"{name}.log"
        cmd = [str(self.binary), "--profile", profile, "--ip", ip,
               "--control", self.control_path, "--name", name]
        for k, v in (sets or {}).items():
            cmd += ["--set", f"{k}={v}"]
        if udp_port:
            cmd += ["--udp-port", str(udp_port)]
        cmd += extra or []
        self.netns = netns
        if prefix is not None:  # the host's own way in (namespaces beyond the network one)
            cmd = prefix + cmd
        elif netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None
        self._client: ControlClient | None = None

    def start(self, timeout: float = 30.0) -> "Daemon":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memmotiond {self.name} exited with {self.proc.returncode}:\n"
                                   + self.log_text()[-3000:])
            if os.path.exists(self.control_path):
                try:
                    self._client = ControlClient(self.control_path)
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"memmotiond {self.name} did not open its control socket in "
                           f"{timeout} s:\n" + self.log_text()[-3000:])

    @property
    def ctl(self) -> ControlClient:
        assert self._client is not None, "daemon not started"
        return self._client

    def session(self, sid: int) -> dict:
        return self.ctl.execute("query-session", session=sid)

    def wait_session(self, sid: int, timeout: float, states=("completed", "failed", "cancelled")) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.session(sid)
            if s["state"] in states:
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {sid} on {self.name} still {s['state']} after "
                                   f"{timeout} s: {s}")
            time.sleep(0.05)

    def stats(self) -> dict:
        return self.ctl.execute("query-stats")

    def kill(self) -> None:
        """SIGKILL: the daemon dies without telling anyone (a crashed host)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._remove_runtime_dir()

    def stop(self) -> int | None:
        code = quit_and_reap(self._client, self.proc)
        self._client = None
        if hasattr(self, "log"):
            self.log.close()
        self._remove_runtime_dir()
        return code

    def _remove_runtime_dir(self) -> None:
        # A daemon that exits cleanly removes its DPDK runtime directory
        # (megabytes of tmpfs); one that was killed cannot.
        if self.proc and self.proc.poll() is not None:
            shutil.rmtree(f"/run/dpdk/mm-{self.name}", ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
