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


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole thread group, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICK


class CpuMeter:
    """Snapshots of several named processes; `delta()` after `stop()`."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.before = {n: cpu_seconds(p) for n, p in pids.items()}
        self.after: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        self.after = {n: cpu_seconds(p) for n, p in self.pids.items()}
        return self.delta()

    def delta(self) -> dict[str, float]:
        return {n: round(self.after[n] - self.before[n], 3) for n in self.pids}
