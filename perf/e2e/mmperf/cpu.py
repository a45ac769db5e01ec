"""CPU seconds of a process (all its threads, exited ones included) from
/proc/<pid>/stat, so a run can charge each QEMU and daemon what it burnt."""

from __future__ import annotations

import os
import re
import threading
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


def thread_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """{tid: (thread name, utime + stime)} of a process's live threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out[int(task.name)] = ((task / "comm").read_text().strip(), stat_seconds(task / "stat"))
        except (OSError, ValueError):
            continue
    return out


def thread_group(name: str) -> str:
    """Threads of one kind under one name: "multifdsend_3" -> "multifdsend_*",
    "CPU 0/TCG" -> "CPU */TCG", "lcore-worker-1" -> "lcore-worker-*"."""
    return re.sub(r"\d+", "*", name)


class ThreadSampler:
    """CPU seconds per kind of thread of several processes over a span
    (QEMU's migration, multifd and vCPU threads; a daemon's main and worker
    lcores), sampled every `period` s in the background so that threads
    which end before the span does (QEMU's multifd threads end with the
    migration) are still counted up to their last sample. What no sample
    caught (less than a period per thread that ended) is "(exited)"."""

    def __init__(self, pids: dict[str, int], period: float = 0.2):
        self.pids = pids
        self.period = period
        self.first = {n: thread_seconds(p) for n, p in pids.items()}
        self.last = {n: dict(v) for n, v in self.first.items()}
        self.total0 = {n: cpu_seconds(p) for n, p in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for n, p in self.pids.items():
            self.last[n].update(thread_seconds(p))

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def stop(self) -> dict[str, dict[str, float]]:
        """{process: {thread kind: CPU seconds}}, largest first."""
        self._stop.set()
        self._thread.join()
        self._sample()
        out = {}
        for n, p in self.pids.items():
            groups: dict[str, float] = {}
            for tid, (name, sec) in self.last[n].items():
                base = self.first[n].get(tid, (name, 0.0))[1]  # born during the span: from 0
                groups[thread_group(name)] = groups.get(thread_group(name), 0.0) + sec - base
            try:
                rest = cpu_seconds(p) - self.total0[n] - sum(groups.values())
            except OSError:  # the process is gone (a failed run)
                rest = 0.0
            if rest > 0.005:
                groups["(exited)"] = rest
            out[n] = {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v >= 0.005}
        return out


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
