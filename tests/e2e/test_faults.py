#!/usr/bin/python3
"""e2e fault matrix: a real QEMU migration through two memmotiond, with one
fault injected at one session state per cell.

Rows (where the fault lands):
  negotiating    the source daemon is negotiating the session with the
                 destination daemon over the peer channel (held there: the
                 fabric is cut while `migrate` is asked for)
  precopy-early  QEMU's first pass over RAM has begun (8 MiB through)
  precopy-late   QEMU has synced its dirty log at least three times (from
                 the second pass on, QEMU's own rate is held at half of
                 what the guest dirties, so precopy cannot converge and
                 complete before the fault lands)
  switchover     the source VM is stopped and QEMU sends its last state
                 (pause-before-switchover, then migrate-continue; the fault
                 lands 4 MiB into the final stage)
  postcopy       the destination VM runs and pulls pages (postcopy-ram,
                 one channel: QEMU 7.2 has no postcopy with multifd)
Faults:
  kill-src, kill-dst  SIGKILL of a daemon (it is started again afterwards)
  cut-1s, cut-10s     every frame on both veth ends dropped by XDP for that
                      long (the daemons' dead timeout is 5 s)
  restart-src/-dst    that daemon killed and started again at once; then a
                      new session through it must complete

What must hold in every cell:
  - the VM runs on exactly one side: on the source unless switchover
    happened; after a switchover (a completed migration, or postcopy) never
    again on the source;
  - nothing unverified reached the destination guest: a completed
    migration's guest RAM is byte-identical (precopy) or the destination
    guest runs its workload (postcopy), and every page a destination daemon
    wrote was verified;
  - each daemon still up ends the session with a clear reason and then
    frees it (query-session "released" after the linger);
  - a daemon that was killed or restarted takes a new session that
    completes (restart-src, restart-dst; after a kill, later cells use
    the daemon started again).
The table printed at the end is the matrix (one line per cell).

Run all rows or some (`--rows precopy-early switchover`), some faults
(`--faults cut-1s`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmtest import flow  # noqa: E402
from mmtest.daemon import ControlError  # noqa: E402
from mmtest.fabric import Fabric  # noqa: E402
from mmtest.guest import ensure_guest  # noqa: E402
from mmtest.proc import report  # noqa: E402
from mmtest.vm import Vm  # noqa: E402

ROWS = ["negotiating", "precopy-early", "precopy-late", "switchover", "postcopy"]
FAULTS = ["kill-src", "kill-dst", "cut-1s", "cut-10s", "restart-src", "restart-dst"]
PACE = 40_000_000  # the session's wire rate, bytes/s: phases last long enough to aim at
LINGER_S = 5.0     # the daemons' dead timeout: a finished session is freed after it
# precopy-late: QEMU's max-bandwidth from the second pass on, bytes/s. Half
# of what memload dirties at its default 2000 pages/s, so the dirty set
# grows from pass to pass and a 10 ms downtime limit is never met.
HOLD_BANDWIDTH = 4_000_000


@dataclass
class Cell:
    row: str
    fault: str
    outcome: str = ""
    problems: list[str] = field(default_factory=list)

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            self.problems.append(what)


class Matrix:
    def __init__(self, f: Fabric, a, kernel: Path, initrd: Path):
        self.f, self.a, self.kernel, self.initrd = f, a, kernel, initrd
        self.src: Vm | None = None
        self.next_sid = 100
        self.vms = 0

    # -- VMs -------------------------------------------------------------
    def append(self) -> str:
        return f"memload.mib={self.a.guest_mib} memload.dirty={self.a.dirty} memload.same=30"

    def source(self) -> Vm:
        """The running source VM; a new one once the last moved away."""
        if self.src is None or self.src.proc is None or self.src.proc.poll() is not None \
                or self.src.status() != "running":
            if self.src is not None:
                self.src.stop()
            self.vms += 1
            self.src = Vm(f"src-{self.vms}", self.f.workdir, self.kernel, self.initrd, self.a.ram,
                          self.append(), netns=self.f.src.netns).start()
            self.src.wait_console(r"MEMLOAD READY", 180)
        return self.src

    def dest(self, sid: int, paused: bool = True) -> Vm:
        """The incoming QEMU. Paused (-S) so that a completed precopy can be
        compared byte for byte; in postcopy it must run as soon as the
        switch comes (QEMU starts it then only without -S)."""
        return Vm(f"dst-{sid}", self.f.workdir, self.kernel, self.initrd, self.a.ram, self.append(),
                  incoming=f"unix:{self.f.workdir}/dst-{sid}.sock", paused=paused, netns=self.f.dst.netns).start()

    # -- faults ----------------------------------------------------------
    def cut(self) -> None:
        """Drops every frame arriving at either veth end (XDP, mm-xdp-loss --all
        at 100 %): the dataplane's and the peer channel's."""
        for host in (self.f.src, self.f.dst):
            self.f.set_loss(host, 100, every_frame=True)

    def uncut(self) -> None:
        self.f.loss_reports()

    def kill(self, role: str) -> None:
        getattr(self.f, f"{role}_daemon").kill()

    def revive(self, role: str) -> None:
        """Starts a killed daemon again with its options."""
        self.f.replace_daemon(role, self.f.daemon_args[role])

    def revive_dead(self) -> None:
        for role in ("src", "dst"):
            d = getattr(self.f, f"{role}_daemon")
            if d.proc is None or d.proc.poll() is not None:
                self.revive(role)

    @staticmethod
    def hard_stop(vm: Vm) -> None:
        """A destination QEMU is not needed after its cell, and one stuck at
        a multifd sync point answers no quit: killed."""
        if vm.proc and vm.proc.poll() is None:
            os.killpg(vm.proc.pid, signal.SIGKILL)
            vm.proc.wait(timeout=10)
        if vm.qmp:
            vm.qmp.close()

    # -- one cell --------------------------------------------------------
    def sid(self) -> int:
        self.next_sid += 1
        return self.next_sid

    @staticmethod
    def configure(row: str, src: Vm, dst: Vm) -> None:
        """The source VM serves many cells: every capability is set each time."""
        postcopy = row == "postcopy"
        src.set_migration({"multifd": not postcopy, "postcopy-ram": postcopy,
                           "pause-before-switchover": row == "switchover"}, {})
        dst.set_migration({"multifd": not postcopy, "postcopy-ram": postcopy}, {})
        # A 10 ms downtime limit keeps precopy iterating for a few passes
        # (precopy-late also holds QEMU's rate below the dirty rate) until
        # the cell lets it finish; at the switchover row one that sends most
        # of RAM in the final stage.
        flow.configure(src, dst, downtime_limit_ms=100_000 if row == "switchover" else 10,
                       multifd=0 if postcopy else 4)

    @staticmethod
    def let_converge(src: Vm) -> None:
        """A downtime limit and a rate at which precopy converges."""
        src.set_migration({}, {"downtime-limit": 2000, "max-bandwidth": flow.MAX_BANDWIDTH})

    def start(self, sid: int, src: Vm) -> str:
        reply = self.f.start_session(sid, f"unix:{self.f.workdir}/src-{sid}.sock",
                                     f"unix:{self.f.workdir}/dst-{sid}.sock", max_bandwidth=PACE)
        src.execute("migrate", uri=reply["migrate-uri"])
        return reply["migrate-uri"]

    def run(self, row: str, fault: str) -> Cell:
        c = Cell(row, fault)
        src = self.source()
        sid = self.sid()
        dst = self.dest(sid, paused=row != "postcopy")
        try:
            self.configure(row, src, dst)
            if row == "negotiating":
                self.negotiating(c, sid, src, dst)
            else:
                self.migrating(c, sid, src, dst)
        except Exception as e:  # a cell that breaks the harness is a failed cell, the rest still run
            where = traceback.extract_tb(e.__traceback__)[-3:]
            c.problems.append(f"{type(e).__name__}: {e} (at " +
                              " < ".join(f"{fr.name}:{fr.lineno}" for fr in reversed(where)) + ")")
        finally:
            self.uncut()
            self.hard_stop(dst)
        self.revive_dead()
        return c

    def negotiating(self, c: Cell, sid: int, src: Vm, dst: Vm) -> None:
        result: dict = {}

        def ask() -> None:
            try:
                result["reply"] = self.f.start_session(sid, f"unix:{self.f.workdir}/src-{sid}.sock",
                                                       f"unix:{self.f.workdir}/dst-{sid}.sock", max_bandwidth=PACE)
            except Exception as e:  # the daemon's refusal, or its death under the call
                result["error"] = f"{type(e).__name__}: {e}"

        self.cut()
        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.5)  # the offer's TCP connection is being retried through the cut
        held = t.is_alive()
        c.check(held, f"the negotiation was not held by the cut: {result}")
        if c.fault in ("kill-src", "restart-src"):
            self.kill("src")
            if c.fault == "restart-src":
                self.revive("src")
        elif c.fault in ("kill-dst", "restart-dst"):
            self.kill("dst")
            if c.fault == "restart-dst":
                self.revive("dst")
        elif c.fault == "cut-1s":
            time.sleep(0.5)
        else:
            time.sleep(9.5)
        self.uncut()
        t.join(30)
        c.check(not t.is_alive(), "migrate still negotiating 30 s after the fault")
        if "reply" in result:
            self.let_converge(src)
            src.execute("migrate", uri=result["reply"]["migrate-uri"])
            self.expect_completed(c, sid, src, dst, "negotiated after the fault")
            return
        err = result.get("error", "")
        c.check(bool(err), "migrate neither answered nor failed")
        c.check(src.status() == "running", f"source VM {src.status()} after a failed negotiation")
        c.check(dst.status() == "inmigrate", f"destination QEMU {dst.status()}, expected still waiting")
        c.outcome = f"negotiation failed: {err[:110]}"
        self.revive_dead()
        self.expect_fresh_session_works(c, src)

    def migrating(self, c: Cell, sid: int, src: Vm, dst: Vm) -> None:
        self.start(sid, src)
        self.reach(c.row, sid, src, dst)
        switched = c.row == "postcopy"
        if c.fault in ("cut-1s", "cut-10s"):
            self.cut()
            time.sleep(1 if c.fault == "cut-1s" else 10)
            self.uncut()
        elif c.fault in ("kill-src", "restart-src"):
            self.kill("src")
            if c.fault == "restart-src":
                self.revive("src")
        else:
            self.kill("dst")
            if c.fault == "restart-dst":
                self.revive("dst")
        if c.fault == "cut-1s":
            # Short of the dead timeout: the transport carries on.
            self.let_converge(src)
            self.expect_completed(c, sid, src, dst, "recovered")
            return
        self.expect_failed(c, sid, src, dst, switched)
        if c.fault in ("restart-src", "restart-dst"):
            self.expect_fresh_session_works(c, self.source())

    def reach(self, row: str, sid: int, src: Vm, dst: Vm) -> None:
        d = self.f.src_daemon
        deadline = time.monotonic() + 120

        def through() -> int:
            return d.session(sid)["counters"]["qemu_bytes_in"]

        def wait(cond, what: str) -> None:
            while not cond():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"never reached {what}: {src.query_migrate()}")
                time.sleep(0.05)

        if row == "precopy-early":
            wait(lambda: through() >= 8 << 20, "8 MiB through")
        elif row == "precopy-late":
            # The second pass holds what the guest dirtied during the first
            # (seconds of it): far more than one 50 ms poll sends.
            wait(lambda: src.query_migrate().get("ram", {}).get("dirty-sync-count", 0) >= 2, "2 dirty syncs")
            src.set_migration({}, {"max-bandwidth": HOLD_BANDWIDTH})
            wait(lambda: src.query_migrate().get("ram", {}).get("dirty-sync-count", 0) >= 3, "3 dirty syncs")
        elif row == "switchover":
            wait(lambda: src.query_migrate().get("status") == "pre-switchover", "pre-switchover")
            at = through()
            src.execute("migrate-continue", state="pre-switchover")
            wait(lambda: through() >= at + (4 << 20), "4 MiB into the final stage")
        elif row == "postcopy":
            wait(lambda: through() >= 16 << 20, "16 MiB through")
            src.execute("migrate-start-postcopy")
            wait(lambda: dst.status() == "running", "the destination running in postcopy")
        if row in ("precopy-early", "precopy-late"):
            st = src.query_migrate().get("status")
            if st != "active":
                raise RuntimeError(f"the migration is {st} before the fault: the cell would test nothing")

    # -- what must hold --------------------------------------------------
    def expect_completed(self, c: Cell, sid: int, src: Vm, dst: Vm, how: str) -> None:
        info = src.wait_migration(180)
        c.check(info["status"] == "completed", f"QEMU migration {info['status']}: {info.get('error-desc')}")
        states = {}
        for d in (self.f.src_daemon, self.f.dst_daemon):
            s = d.wait_session(sid, 60)
            states[d.name] = s["state"]
            c.check(s["state"] == "completed", f"{d.name}: session {s['state']}: {s.get('error')}")
        if info["status"] != "completed":
            return
        if c.row == "postcopy":
            mark = len(dst.console())
            dst.wait_console(r"MEMLOAD TICK \d+", 30, after=mark)
            c.check(src.status() == "postmigrate", f"source VM {src.status()} after postcopy")
            verdict = "destination guest runs on"
        else:
            try:
                verdict = flow.verify(src, dst, self.f.workdir)
            except AssertionError as e:
                c.problems.append(str(e))
                verdict = "verify failed"
        self.check_verified(c, sid)
        self.check_released(c, sid, [self.f.src_daemon, self.f.dst_daemon])
        c.outcome = f"{how}: completed, {verdict}"
        self.hard_stop(src)  # the VM lives on the destination now
        self.src = None

    def expect_failed(self, c: Cell, sid: int, src: Vm, dst: Vm, switched: bool) -> None:
        where_dst = ""
        if not switched:
            info = src.wait_migration(60)
            c.check(info["status"] == "failed", f"source QEMU migration {info['status']}, expected failed")
            deadline = time.monotonic() + 30
            while src.status() != "running" and time.monotonic() < deadline:
                time.sleep(0.1)
            c.check(src.status() == "running", f"source VM {src.status()} after the failure, expected running")
            mark = len(src.console())
            src.wait_console(r"MEMLOAD TICK \d+", 30, after=mark)
            # The destination never ran it (it may have quit, or wait).
            if dst.proc and dst.proc.poll() is None:
                dst.qmp.sock.settimeout(3)
                try:
                    st = dst.status()
                except Exception as e:  # a QEMU 7.2 destination stuck at a sync point answers nothing
                    st = f"not answering ({type(e).__name__})"
                c.check(st != "running", "the destination runs the VM too")
        else:
            # Postcopy: the destination owns the VM from the switch on.
            time.sleep(LINGER_S + 2)
            c.check(src.status() != "running", f"source VM {src.status()} after postcopy began: split brain")
            # A TCG vCPU that waits for a page while holding QEMU's global
            # lock leaves the destination's monitor without an answer: it
            # still holds the VM, paused.
            dst.qmp.sock.settimeout(5)
            try:
                st = dst.query_migrate().get("status")
            except TimeoutError:
                st = "not answering"
            c.check(st in ("postcopy-paused", "failed", "completed", "not answering"),
                    f"destination migration {st} after the fault")
            where_dst = st
        reasons = []
        alive = []
        for role in ("src", "dst"):
            d = getattr(self.f, f"{role}_daemon")
            if c.fault in (f"kill-{role}", f"restart-{role}"):
                if c.fault.startswith("restart"):
                    try:
                        d.session(sid)
                        c.problems.append(f"the restarted {d.name} knows session {sid}")
                    except ControlError:
                        pass
                continue
            s = d.wait_session(sid, 30)
            c.check(s["state"] in ("failed", "cancelled"), f"{d.name}: session {s['state']}, expected it to end")
            c.check(bool(s.get("error")), f"{d.name}: session {s['state']} without a reason")
            reasons.append(f"{role}: {s.get('error', '').split(' (')[0][:90]}")
            alive.append(d)
        self.check_verified(c, sid)
        self.check_released(c, sid, alive)
        where = f"the destination holds it ({where_dst})" if switched else "source runs on"
        c.outcome = f"failed, {where}; " + "; ".join(reasons)

    def check_verified(self, c: Cell, sid: int) -> None:
        d = self.f.dst_daemon
        if d.proc is None or d.proc.poll() is not None:
            return
        try:
            cd = d.session(sid)["counters"]
        except ControlError:
            return  # a restarted daemon: it wrote nothing of this session
        c.check(cd["pages_verified"] == cd["pages_written"] - cd["pages_zero"],
                f"destination wrote {cd['pages_written'] - cd['pages_zero']} non-zero pages, verified "
                f"{cd['pages_verified']}")

    def check_released(self, c: Cell, sid: int, daemons) -> None:
        deadline = time.monotonic() + LINGER_S + 10
        for d in daemons:
            while not d.session(sid).get("released") and time.monotonic() < deadline:
                time.sleep(0.2)
            c.check(bool(d.session(sid).get("released")), f"{d.name}: session {sid} not freed after the linger")

    def expect_fresh_session_works(self, c: Cell, src: Vm) -> None:
        """After the fault, the daemons (one of them new) carry a new session."""
        sid = self.sid()
        dst = self.dest(sid)
        try:
            self.configure("precopy", src, dst)
            self.let_converge(src)
            self.start(sid, src)
            info = src.wait_migration(180)
            c.check(info["status"] == "completed", f"a new session after the fault: QEMU {info['status']}")
            if info["status"] == "completed":
                for d in (self.f.src_daemon, self.f.dst_daemon):
                    d.wait_session(sid, 60)
                try:
                    flow.verify(src, dst, self.f.workdir)
                except AssertionError as e:
                    c.problems.append(f"a new session after the fault: {e}")
                self.hard_stop(src)
                self.src = None
                c.outcome += "; a new session then completed"
        finally:
            self.hard_stop(dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--rows", nargs="*", default=ROWS, choices=ROWS)
    ap.add_argument("--faults", nargs="*", default=FAULTS, choices=FAULTS)
    ap.add_argument("--ram", type=int, default=256, help="guest RAM, MiB")
    ap.add_argument("--guest-mib", type=int, default=128, help="MiB memload fills")
    ap.add_argument("--dirty", type=int, default=2000, help="pages/s memload dirties")
    a = ap.parse_args()
    kernel, initrd = ensure_guest(a.build)
    cells: list[Cell] = []
    t0 = time.monotonic()
    with Fabric(a.build, "af_packet-veth", peer_channel="required") as f:
        m = Matrix(f, a, kernel, initrd)
        try:
            for row in a.rows:
                for fault in a.faults:
                    t = time.monotonic()
                    c = m.run(row, fault)
                    cells.append(c)
                    mark = "ok  " if not c.problems else "FAIL"
                    print(f"{mark} {row:<14} {fault:<12} {time.monotonic() - t:5.1f} s  {c.outcome}", flush=True)
                    for p in c.problems:
                        print(f"       - {p}", flush=True)
        finally:
            if m.src is not None:
                m.src.stop()
        problems = [f"{c.row}/{c.fault}: {p}" for c in cells for p in c.problems]
        print(f"{len(cells)} cells in {time.monotonic() - t0:.0f} s, {sum(1 for c in cells if not c.problems)} hold")
        return report(problems, f.logs() if problems else "")


if __name__ == "__main__":
    sys.exit(main())
