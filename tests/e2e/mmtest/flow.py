"""The migrate-and-verify flow shared by the e2e tests and the demo: set up
both QEMUs, migrate, wait, then prove the result -- guest RAM byte-identical
on both sides (source stopped, destination still paused) and the
destination guest running on afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .compare import compare_dumps
from .vm import Vm

# QEMU 7.2 caps migration at 128 MiB/s unless told otherwise; lift it so the
# path under test, not the default, sets the pace.
MAX_BANDWIDTH = 10 << 30


@dataclass
class MigrationResult:
    status: str
    total_ms: float          # QEMU source: total-time
    downtime_ms: float       # QEMU source: downtime (includes the destination load: return path)
    dst_downtime_ms: float   # source STOP event -> destination MIGRATION completed event
    transferred: int         # bytes QEMU wrote into the migration stream
    info: dict

    def line(self) -> str:
        return (f"total {self.total_ms:.0f} ms, downtime {self.downtime_ms:.0f} ms "
                f"(at destination {self.dst_downtime_ms:.0f} ms), "
                f"{self.transferred / 2**20:.1f} MiB from QEMU")


def configure(src: Vm, dst: Vm, downtime_limit_ms: int = 300, multifd: int = 0) -> None:
    """Migration capabilities and parameters on both QEMUs; multifd > 0
    turns on multifd with that many channels (both sides must agree)."""
    caps = {"events": True, "return-path": True}
    extra = {}
    if multifd:
        caps["multifd"] = True
        extra = {"multifd-channels": multifd}
    src.set_migration(caps, {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": downtime_limit_ms, **extra})
    dst.set_migration(caps, extra)


def _event_time(events: list[dict], name: str, status: str | None = None) -> float | None:
    for e in events:
        if e.get("event") == name and (status is None or e.get("data", {}).get("status") == status):
            ts = e["timestamp"]
            return ts["seconds"] + ts["microseconds"] / 1e6
    return None


def migrate(src: Vm, dst: Vm, uri: str, timeout: float = 300) -> MigrationResult:
    """Starts `migrate` on the source to uri and waits for the outcome."""
    assert src.qmp and dst.qmp
    src.qmp.events.clear()
    dst.qmp.events.clear()
    src.execute("migrate", uri=uri)
    info = src.wait_migration(timeout)
    result = MigrationResult(info["status"], float(info.get("total-time", 0)),
                             float(info.get("downtime", 0)), 0.0,
                             int(info.get("ram", {}).get("transferred", 0)), info)
    if info["status"] == "completed":
        deadline = time.monotonic() + 60
        while dst.status() == "inmigrate":
            if time.monotonic() > deadline:
                raise TimeoutError("destination still inmigrate a minute after the source completed")
            time.sleep(0.05)
        dst.execute("query-status")  # collect pending events
        t_stop = _event_time(src.qmp.events, "STOP")
        t_done = _event_time(dst.qmp.events, "MIGRATION", "completed")
        if t_stop and t_done:
            result.dst_downtime_ms = (t_done - t_stop) * 1000
    return result


def verify(src: Vm, dst: Vm, workdir: Path, keep_source_dump: bool = False) -> str:
    """Source stopped, destination paused: RAM must be byte-identical. Then
    the destination is resumed and must keep running its workload. Returns a
    description; raises AssertionError on any mismatch. keep_source_dump:
    the source's RAM dump stays in workdir as <name>.ram (for a later check)."""
    assert src.status() == "postmigrate", f"source is {src.status()}, expected postmigrate"
    assert dst.status() == "paused", f"destination is {dst.status()}, expected paused (-S)"
    a = src.pmemsave(Path(workdir) / f"{src.name}.ram")
    b = dst.pmemsave(Path(workdir) / f"{dst.name}.ram")
    diff = compare_dumps(a, b)
    if not keep_source_dump:
        a.unlink()
    b.unlink()
    assert diff.identical, f"guest RAM differs after migration: {diff}"
    mark = len(dst.console())
    dst.execute("cont")
    dst.wait_console(r"MEMLOAD TICK \d+", timeout=30, after=mark)
    assert dst.status() == "running", f"destination is {dst.status()} after cont"
    return f"guest RAM {diff}; destination running"
