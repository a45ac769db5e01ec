"""One measured migration: a fresh source VM with its workload, a paused
destination VM on the other host, one mode, one link cap; returns a record
of what it took (or why it failed). Guest RAM is checked byte-identical
after every run; a run that fails the check is a failed run."""

from __future__ import annotations

import datetime
import sys
import time
import traceback
from pathlib import Path

from . import harness  # noqa: F401  (puts tests/e2e on sys.path)
from .cpu import CpuMeter, ThreadSampler, daemon_cpu_per_gib, program_pid
from .link import DST_IP as QEMU_LINK_DST_IP, QemuLink, tx_bytes
from .matrix import Mode, Scenario

from mmtest import flow  # noqa: E402
from mmtest.daemon import ControlError  # noqa: E402
from mmtest.fabric import Fabric  # noqa: E402
from mmtest.qmp import QmpError  # noqa: E402
from mmtest.vm import Vm  # noqa: E402

PAGE = 4096
DOWNTIME_LIMIT_MS = 300  # the same for every mode
SETTLE_S = 2.0           # after MEMLOAD READY, so the dirtying is in its stride


class RunFailed(Exception):
    pass


def default_timeout(ram_mib: int) -> float:
    """Seconds a migration of that much guest RAM may take: room for ten
    full passes at 1 Gbit/s; one that has not converged by then is
    reported as such."""
    return 120 + 10 * (ram_mib << 20) / 125e6


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n!! {msg}\n{bar}\n", file=sys.stderr, flush=True)


class MigrationRunner:
    """Owns the two hosts (a Fabric: namespaces + daemons) across runs and
    restarts them after a failed run through the daemons."""

    def __init__(self, build: Path, kernel: Path, initrd: Path, profile: str = "af_packet-veth",
                 timeout: float | None = None, allow_relay_fallback: bool = False,
                 qemu_transport: str = "tcp", mm_encrypt: str | None = None):
        self.build = Path(build)
        self.kernel, self.initrd = kernel, initrd
        self.profile = profile
        self.timeout = timeout
        self.allow_relay_fallback = allow_relay_fallback
        self.pages_rejected: str | None = None  # the daemon's answer, once it refused `pages`
        self.qemu_transport = qemu_transport  # "tcp": over a veth of its own; "unix"
        self.fabric: Fabric | None = None
        # "required" / "off": MemoryMotion sessions negotiated over the peer
        # channel with that --encrypt; None: set up directly (no key).
        self.mm_encrypt = mm_encrypt
        self.link: QemuLink | None = None
        self.seq = 0
        self.hops = 0  # migrations: names their sockets and ports
        self.sid = 100

    # -- hosts ---------------------------------------------------------
    def open(self) -> None:
        # memif too gets a namespace per host, so that QEMU's own modes still
        # cross a veth between them (the daemons meet over memif's socket).
        f = Fabric(self.build, self.profile, memif_netns=True, peer_channel=self.mm_encrypt)
        f.__enter__()
        self.fabric = f
        if self.qemu_transport == "tcp":
            if not (f.src.netns and f.dst.netns):
                loud(f"profile {self.profile} puts both hosts in one namespace: QEMU's own modes "
                     "migrate over a unix socket instead of TCP")
                self.qemu_transport = "unix"
            else:
                self.link = QemuLink.create(f.src.netns, f.dst.netns, f.suffix, f.mtu)

    def close(self) -> None:
        if self.fabric:
            self.fabric.close()  # deleting the namespaces deletes the QEMU link too
            self.fabric = None
            self.link = None

    def _daemons_alive(self) -> bool:
        f = self.fabric
        return bool(f) and all(d.proc and d.proc.poll() is None for d in (f.src_daemon, f.dst_daemon))

    def _restart(self, why: str) -> None:
        print(f"perf: restarting both hosts' daemons ({why})", flush=True)
        self.close()
        self.open()

    # -- one run -------------------------------------------------------
    def migration_timeout(self, sc: Scenario) -> float:
        return self.timeout or default_timeout(sc.size.ram_mib)

    def run(self, sc: Scenario, mode: Mode, repeat: int) -> dict:
        if not self._daemons_alive():
            self._restart("a daemon is gone")
        self.seq += 1
        rec: dict = {
            "scenario": sc.key, "size_mib": sc.size.ram_mib, "workload_mib": sc.size.workload_mib,
            "workload": sc.workload.name, "cap": sc.cap, "cap_bytes_per_s": sc.cap_bytes,
            "mode": mode.name, "family": mode.family, "repeat": repeat,
            "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "ok": False, "error": None, "verify": None,
            "pages_policy": mode.pages, "pages_applied": None,
        }
        t0 = time.monotonic()
        try:
            self._run(sc, mode, rec)
            rec["ok"] = True
        except (RunFailed, AssertionError) as e:
            rec["error"] = str(e)
        except (TimeoutError, RuntimeError, ConnectionError, OSError, QmpError, ControlError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc()[-2000:]
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        if not rec["ok"] and mode.via_daemons:
            rec["daemon_logs"] = self.fabric.logs()[-4000:] if self.fabric else ""
            self._restart("the last run through them failed")
        return rec

    def _run(self, sc: Scenario, mode: Mode, rec: dict) -> None:
        if sc.ping_pong_s is not None:
            return self._run_ping_pong(sc, mode, rec)
        f = self.fabric
        assert f is not None
        wd, n = f.workdir, self.seq
        append = sc.workload.cmdline(sc.size.workload_mib)
        ram = sc.size.ram_mib
        with Vm(f"r{n}-src", wd, self.kernel, self.initrd, ram, append, netns=f.src.netns) as src, \
             Vm(f"r{n}-dst", wd, self.kernel, self.initrd, ram, append, incoming="defer",
                paused=True, netns=f.dst.netns) as dst:
            t_boot = time.monotonic()
            m = src.wait_console(r"MEMLOAD READY|MMGUEST memload exited.*", 120 + sc.size.workload_mib)
            if not m.group(0).startswith("MEMLOAD READY"):
                raise RunFailed(f"the guest workload did not start: {src.console()[-300:]!r}")
            rec["boot_s"] = round(time.monotonic() - t_boot, 1)
            time.sleep(SETTLE_S)
            self.migrate_vms(src, dst, mode, sc.cap_bytes, rec, self.migration_timeout(sc))

    def _run_ping_pong(self, sc: Scenario, mode: Mode, rec: dict) -> None:
        """A -> B (its figures kept under "first"), the guest runs
        sc.ping_pong_s seconds on B, then B -> A: the measured migration.
        Through the daemons both hops name the VM, so A's daemon keeps its
        image and the way back sends what did not change as PAGE_STORED."""
        f = self.fabric
        assert f is not None
        wd, n = f.workdir, self.seq
        append = sc.workload.cmdline(sc.size.workload_mib)
        ram = sc.size.ram_mib
        vm_name = f"perf-{f.suffix}-{n}" if mode.via_daemons else None
        with Vm(f"r{n}-a", wd, self.kernel, self.initrd, ram, append, netns=f.src.netns) as a, \
             Vm(f"r{n}-b", wd, self.kernel, self.initrd, ram, append, incoming="defer",
                paused=True, netns=f.dst.netns) as b:
            m = a.wait_console(r"MEMLOAD READY|MMGUEST memload exited.*", 120 + sc.size.workload_mib)
            if not m.group(0).startswith("MEMLOAD READY"):
                raise RunFailed(f"the guest workload did not start: {a.console()[-300:]!r}")
            time.sleep(SETTLE_S)
            first: dict = {}
            self.migrate_vms(a, b, mode, sc.cap_bytes, first, self.migration_timeout(sc), vm_name=vm_name)
            rec["first"] = {k: first.get(k) for k in ("total_ms", "downtime_ms", "wire_bytes", "cpu_total_s")}
            if vm_name:  # A's daemon made the VM's image when the session ended
                deadline = time.monotonic() + 30
                while not any(i["vm"] == vm_name for i in f.src_daemon.ctl.execute("query-store")["images"]):
                    if time.monotonic() > deadline:
                        raise RunFailed(f"no image of {vm_name} on the first source: "
                                        f"{f.src_daemon.ctl.execute('query-store').get('last-dropped')}")
                    time.sleep(0.2)
            time.sleep(sc.ping_pong_s)
            with Vm(f"r{n}-back", wd, self.kernel, self.initrd, ram, append, incoming="defer",
                    paused=True, netns=f.src.netns) as back:
                with f.reversed():
                    if self.link:
                        self.link.swap()
                    try:
                        self.migrate_vms(b, back, mode, sc.cap_bytes, rec, self.migration_timeout(sc), vm_name=vm_name)
                    finally:
                        if self.link:
                            self.link.swap()
            if vm_name:
                for d in (f.src_daemon, f.dst_daemon):
                    d.ctl.execute("store-forget", vm=vm_name) if any(
                        i["vm"] == vm_name for i in d.ctl.execute("query-store")["images"]) else None

    def migrate_vms(self, src: Vm, dst: Vm, mode: Mode, cap_bytes: int, rec: dict, timeout: float,
                    vm_name: str | None = None) -> None:
        """One measured migration from a running VM to one started with
        `-incoming defer` (paused) on the other host, in `mode` under a link
        cap of `cap_bytes` bytes/s (0: none), then the RAM check. Fills
        `rec` with what it measured; raises RunFailed (or the harness's
        errors) when the migration or its check fails. For QEMU's own modes
        over TCP, src must run on the source host and dst on the
        destination host (the link is shaped on the source's side); through
        the daemons QEMUs reach them over unix sockets from anywhere."""
        f = self.fabric
        assert f is not None
        self.hops += 1
        wd, n = f.workdir, self.hops
        tcp = self.qemu_transport == "tcp" and not mode.via_daemons
        # The destination daemon reaches its QEMU over a unix socket.
        dst_in = f"tcp:{self.link.dst_ip if self.link else QEMU_LINK_DST_IP}:{5000 + n}" if tcp \
            else f"unix:{wd}/h{n}-dst-in.sock"
        rec["qemu_transport"] = "memmotiond" if mode.via_daemons else self.qemu_transport
        flow.configure(src, dst, DOWNTIME_LIMIT_MS, multifd=mode.multifd)
        if mode.multifd:  # said every time: a VM migrated before may keep another setting
            for vm in (src, dst):
                vm.set_migration({}, {"multifd-compression": mode.qemu_compression})
        # The cap. Over QEMU's own TCP link: tc tbf on that link, a true
        # link cap (QEMU's max-bandwidth would be lifted for the final
        # stop-and-copy and counts multifd bytes before compression).
        # Over a unix socket: QEMU's max-bandwidth, the only knob there.
        # Through the daemons QEMU runs free and the MMP pacer caps wire
        # bytes/s, final phase included.
        shaped = bool(tcp and cap_bytes and self.link)
        if self.link:
            self.link.shape(cap_bytes if shaped else 0)
        qemu_cap = cap_bytes if (cap_bytes and not mode.via_daemons and not shaped) else flow.MAX_BANDWIDTH
        src.set_migration({}, {"max-bandwidth": qemu_cap})
        rec["qemu_max_bandwidth"] = qemu_cap
        rec["link_shaped_bytes_per_s"] = cap_bytes if shaped else 0
        # Listen only now, as libvirt does: a QEMU 7.2 given -incoming URI
        # listens at start-up, before multifd is on, with a backlog of 1,
        # and over TCP a multifd migration then waits out a 1 s SYN retry.
        dst.execute("migrate-incoming", uri=dst_in)

        sid = None
        if mode.via_daemons:
            sid, uri = self._start_session(mode, cap_bytes, f"h{n}", dst_in, rec, vm=vm_name)
        else:
            uri = dst_in

        pids = {"qemu_src": program_pid(src.proc.pid, "qemu-system-x86_64"),
                "qemu_dst": program_pid(dst.proc.pid, "qemu-system-x86_64"),
                "daemon_src": program_pid(f.src_daemon.proc.pid, "memmotiond"),
                "daemon_dst": program_pid(f.dst_daemon.proc.pid, "memmotiond")}
        meter = CpuMeter(pids)
        threads = ThreadSampler(pids)
        link0 = self._link_bytes(mode)
        try:
            r = flow.migrate(src, dst, uri, timeout=timeout)
        except TimeoutError as e:
            threads.stop()
            self._cancel(src, sid)
            raise RunFailed(f"no completion within {timeout:.0f} s (did not converge?): {e}")
        if sid is not None:
            s_src = f.src_daemon.wait_session(sid, 60)
            s_dst = f.dst_daemon.wait_session(sid, 60)
        cpu = meter.stop()
        rec["cpu_threads_s"] = threads.stop()
        link1 = self._link_bytes(mode)
        if self.link:
            self.link.shape(0)
        if link0 and link1:
            rec["link_tx_bytes"] = link1[0] - link0[0]
            rec["link_tx_bytes_reverse"] = link1[1] - link0[1]

        ram_info = r.info.get("ram", {})
        rec.update({
            "qemu_status": r.status, "total_ms": r.total_ms, "downtime_ms": r.downtime_ms,
            "dst_downtime_ms": round(r.dst_downtime_ms, 1), "setup_ms": r.info.get("setup-time"),
            "qemu_bytes": r.transferred, "guest_ram_bytes": src.ram_bytes,
            "cpu_s": cpu, "cpu_total_s": round(sum(cpu.values()), 3), "qemu_ram": ram_info,
        })
        # The QEMUs' CPU includes their guests running; what migrating
        # cost is the rest (None if the vCPU threads were not named).
        vcpu = meter.vcpu_delta()
        if set(vcpu) == {"qemu_src", "qemu_dst"}:
            rec["cpu_vcpu_s"] = vcpu
            rec["cpu_migration_s"] = round(sum(cpu.values()) - sum(vcpu.values()), 3)
        if r.status != "completed":
            # Where the VM is and what the destination QEMU says: the source's
            # error-desc alone cannot tell a broken stream from a daemon's
            # hang-up after the destination finished.
            try:
                dst_side = (f"; destination QEMU: migration {dst.execute('query-migrate').get('status')}, "
                            f"VM {dst.status()}; source VM {src.status()}; destination log: "
                            f"{dst.qemu_log()[-300:]!r}")
            except Exception as e:  # a QEMU that died answers nothing
                dst_side = f"; destination QEMU not answering: {e}; log: {dst.qemu_log()[-300:]!r}"
            raise RunFailed(f"QEMU migration {r.status}: {r.info.get('error-desc')}{dst_side}")
        if sid is not None:
            cs, cd = s_src["counters"], s_dst["counters"]
            rec.update({"session": sid, "daemon_src": cs, "daemon_dst": cd,
                        "wire_bytes": cs["wire_bytes_tx"], "wire_bytes_reverse": cd["wire_bytes_tx"],
                        "wire_bytes_what": "source daemon wire_bytes_tx (Ethernet+IPv4+UDP+MMP, "
                                           "retransmits included)"})
            rec.update(daemon_cpu_per_gib(rec))
            # The page store within its budget (issue 12), by the daemons' own
            # count: recorded for every run, a run over budget fails.
            rec["store"] = {}
            for side, d in (("src", f.src_daemon), ("dst", f.dst_daemon)):
                st = d.ctl.execute("query-store")
                rec["store"][side] = {k: st.get(k) for k in ("budget", "used", "backing", "captures-dropped")}
                if st.get("budget") and st.get("used", 0) > st["budget"]:
                    raise RunFailed(f"{side} daemon's page store uses {st['used']} bytes of a {st['budget']} budget")
            bad = [f"{s['role']} daemon session {s['state']}: {s.get('error')}"
                   for s in (s_src, s_dst) if s["state"] != "completed"]
            if bad:
                raise RunFailed("; ".join(bad))
        elif tcp:
            rec.update({"wire_bytes": rec["link_tx_bytes"], "wire_bytes_reverse": rec["link_tx_bytes_reverse"],
                        "wire_bytes_what": "tx bytes of the source's veth (Ethernet+IPv4+TCP)"})
        elif mode.qemu_compression == "none":
            rec.update({"wire_bytes": r.transferred, "wire_bytes_reverse": None,
                        "wire_bytes_what": "QEMU ram.transferred (stream bytes; unix socket, "
                                           "no TCP/IP/Ethernet headers)"})
        else:
            rec.update({"wire_bytes": None, "wire_bytes_reverse": None,
                        "wire_bytes_what": "unknown: over a unix socket only QEMU's count exists, and "
                                           "QEMU 7.2 counts multifd bytes before compression"})
        if r.dst_downtime_ms <= 0:
            raise RunFailed("no downtime measured at the destination (STOP / MIGRATION events missing)")
        if not r.total_ms:
            raise RunFailed("QEMU reported no total-time for a completed migration")
        rec["pages_per_s"] = round(src.ram_bytes / PAGE / (r.total_ms / 1000), 1)
        rec["verify"] = flow.verify(src, dst, wd)

    def _link_bytes(self, mode: Mode) -> tuple[int, int] | None:
        """Counters of the link the migration crosses: the daemons' fabric
        veth for mm modes (a check on their own count), QEMU's veth for TCP."""
        f = self.fabric
        if mode.via_daemons:
            if f and f.src.netns and f.src.iface and f.dst.iface:
                return tx_bytes(f.src.netns, f.src.iface), tx_bytes(f.dst.netns, f.dst.iface)
            return None
        return self.link.counters() if self.link else None

    def _start_session(self, mode: Mode, cap_bytes: int, tag: str, dst_in: str, rec: dict, vm: str | None = None):
        f = self.fabric
        assert f is not None
        listen = f"unix:{f.workdir}/{tag}-mm-out.sock"
        pages = mode.pages
        if pages is not None and self.pages_rejected is None:
            self.sid += 1
            try:
                reply = f.start_session(self.sid, listen, dst_in, cap_bytes, pages=pages, vm=vm)
                rec["pages_applied"] = True
                return self.sid, reply["migrate-uri"]
            except TypeError as e:  # a tests/e2e/mmtest without the argument yet
                if "pages" not in str(e):
                    raise
                self.pages_rejected = f"Fabric.start_session has no 'pages' argument ({e})"
            except ControlError as e:
                if "pages" not in e.desc:
                    raise
                self._forget(self.sid)
                self.pages_rejected = e.desc
        if pages is not None:
            if not self.allow_relay_fallback:
                raise RunFailed(f"the source daemon refuses the page policy: {self.pages_rejected}")
            loud(f"memmotiond refuses the page policy ({self.pages_rejected}); {mode.name} runs as a "
                 f"PLAIN RELAY (pages=None): its figures are NOT those of {mode.name}")
        self.sid += 1
        reply = f.start_session(self.sid, listen, dst_in, cap_bytes, vm=vm)
        rec["pages_applied"] = False if pages is not None else None
        return self.sid, reply["migrate-uri"]

    def _forget(self, sid: int) -> None:
        """Drops a session the destination prepared for a start that failed."""
        try:
            self.fabric.dst_daemon.ctl.execute("session-cancel", session=sid)
        except Exception:
            pass

    def _cancel(self, src: Vm, sid: int | None) -> None:
        try:
            src.execute("migrate_cancel")
            src.wait_migration(30)
        except Exception:
            pass
        if sid is not None:
            self._forget(sid)
            try:
                self.fabric.src_daemon.ctl.execute("session-cancel", session=sid)
            except Exception:
                pass
