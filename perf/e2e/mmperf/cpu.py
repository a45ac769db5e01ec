"""CPU seconds of a process (all its threads, exited ones included) from
/proc/<pid>/stat, so a run can charge each QEMU and daemon what it burnt."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def program_pid(pid: int, expect: str) -> int:
    """The pid running `expect`: the pid itself (`ip netns exec` execs the
    program in place) or, should a wrapper have forked, its child."""
    if comm(pid).startswith(expect[:15]):
        return pid
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                if comm(int(child)).startswith(expect[:15]):
                    return int(child)
        except OSError:
            continue
    raise RuntimeError(f"pid {pid} ({comm(pid)!r}) is not {expect} and has no such child")


def stat_seconds(stat_file: Path) -> float:
    """utime + stime from a /proc stat file (a process's or one thread's)."""
    stat = stat_file.read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole thread group, in seconds."""
    return stat_seconds(Path(f"/proc/{pid}/stat"))


def vcpu_seconds(pid: int) -> float | None:
    """utime + stime of the process's vCPU threads (QEMU started with
    `-name ...,debug-threads=on` names them "CPU <n>/TCG" or "/KVM"): the
    guest's own execution, not migration work. vCPU threads live as long as
    the VM, so a difference of two readings is exact. None when no thread
    is named so."""
    total, found = 0.0, False
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if not (task / "comm").read_text().startswith("CPU "):
                continue
            total += stat_seconds(task / "stat")
        except OSError:
            continue
        found = True
    return total if found else None


class CpuMeter:
    """Snapshots of several named processes; `delta()` after `stop()`."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.before = {n: cpu_seconds(p) for n, p in pids.items()}
        # QEMUs whose vCPU threads can be told apart (named: debug-threads).
        vcpu = {n: vcpu_seconds(p) for n, p in pids.items() if n.startswith("qemu")}
        self.vcpu_before = {n: v for n, v in vcpu.items() if v is not None}
        self.after: dict[str, float] = {}
        self.vcpu_after: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        self.vcpu_after = {n: vcpu_seconds(self.pids[n]) or 0.0 for n in self.vcpu_before}
        self.after = {n: cpu_seconds(p) for n, p in self.pids.items()}
        return self.delta()

    def vcpu_delta(self) -> dict[str, float]:
        """Of each QEMU's CPU seconds, those its vCPU threads ran (the guest)."""
        return {n: round(self.vcpu_after[n] - self.vcpu_before[n], 3) for n in self.vcpu_before}

    def delta(self) -> dict[str, float]:
        return {n: round(self.after[n] - self.before[n], 3) for n in self.pids}


GIB = 1 << 30


def daemon_cpu_per_gib(rec: dict) -> dict[str, float | None]:
    """Each daemon's CPU seconds per GiB of guest stream it handled: the
    source daemon per GiB read from its QEMU (`qemu_bytes_in`), the
    destination daemon per GiB written to its QEMU (`qemu_bytes_out`).
    From a run record's `cpu_s` and session counters; None where either is
    missing (QEMU's own modes, runs that failed early)."""
    cpu = rec.get("cpu_s") or {}
    out: dict[str, float | None] = {}
    for name, counters, key in (("daemon_src", "daemon_src", "qemu_bytes_in"),
                                ("daemon_dst", "daemon_dst", "qemu_bytes_out")):
        nbytes = (rec.get(counters) or {}).get(key)
        out[f"cpu_{name}_s_per_gib"] = (round(cpu[name] / (nbytes / GIB), 3)
                                        if nbytes and cpu.get(name) is not None else None)
    return out
