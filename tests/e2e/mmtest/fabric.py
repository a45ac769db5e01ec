"""Two MemoryMotion hosts for tests: two network namespaces joined by a veth
pair (or one namespace with memif), each running a memmotiond, with the
fabric addresses each side needs to reach the other."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .daemon import Daemon

# Fabric (dataplane) addresses: not configured on the kernel interfaces, so
# the kernel ignores MMP frames that AF_PACKET also hands to it.
SRC_IP = "10.77.1.1"
DST_IP = "10.77.1.2"
# Kernel addresses on the veth, for ping/TCP between the hosts.
SRC_KERNEL_IP = "10.77.0.1"
DST_KERNEL_IP = "10.77.0.2"


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"{what} needs root (network namespaces, veth, DPDK); run as root")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (scripts/mm setup installs them)")


@dataclass
class Host:
    netns: str | None
    iface: str | None
    fabric_ip: str
    kernel_ip: str | None
    mac: str | None = None
    # How to run a command on this host when a network namespace is not all
    # of it (a libvirt host has a mount namespace too: mmtest/libvirt.py).
    prefix: list[str] | None = None
    peer_port: int = 7471  # its daemon's peer channel (with Fabric(peer_channel=...))

    def exec_prefix(self) -> list[str]:
        if self.prefix is not None:
            return self.prefix
        return ["ip", "netns", "exec", self.netns] if self.netns else []


class Fabric:
    """Context manager: hosts + daemons. kind: a NIC profile name (af_packet-veth,
    af_packet-veth-mtu1500, af_xdp-veth or memif). memif_netns: with memif,
    each daemon runs in a network namespace of its own all the same (memif
    meets over a socket file, which namespaces do not separate), so other
    links can join the two hosts (perf/e2e's QEMU link); by default memif
    puts both daemons in this namespace."""

    def __init__(self, build: Path, kind: str = "af_packet-veth", mtu: int | None = None,
                 workdir: Path | None = None, daemon_args: dict[str, list[str]] | None = None,
                 memif_netns: bool = False, peer_channel: str | None = None):
        require_root("the fabric")
        require_tools("ip")
        self.build = Path(build)
        self.kind = kind
        self.memif_netns = memif_netns
        self.suffix = secrets.token_hex(3)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"mm-{self.suffix}-"))
        self.mtu = mtu or {"af_packet-veth": 9000, "af_packet-veth-mtu1500": 1500,
                           "af_packet-veth-2q": 9000, "af_xdp-veth": 3000, "memif": 9000}[kind]
        self.namespaces: list[str] = []
        self.daemon_args = daemon_args or {}
        # peer_channel "required" or "off": the daemons get a pre-shared key,
        # the destination a peer channel, and start_session() negotiates
        # over it (`migrate`) with that --encrypt on both; None: sessions
        # are set up directly (session-prepare / session-start), unkeyed.
        self.peer_channel = peer_channel
        self.loss_procs: list[subprocess.Popen] = []
        self.steered: list[Host] = []
        self.src: Host
        self.dst: Host
        self.src_daemon: Daemon
        self.dst_daemon: Daemon

    # -- hosts ---------------------------------------------------------
    def _make_hosts(self) -> None:
        ns_s, ns_d = f"mm-src-{self.suffix}", f"mm-dst-{self.suffix}"
        if self.kind == "memif" and not self.memif_netns:
            self.src = Host(None, None, SRC_IP, None)
            self.dst = Host(None, None, DST_IP, None)
            return
        for ns in (ns_s, ns_d):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
        if self.kind == "memif":  # no fabric interface: the daemons meet over memif
            for ns in (ns_s, ns_d):
                run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
            self.src = Host(ns_s, None, SRC_IP, None)
            self.dst = Host(ns_d, None, DST_IP, None)
            return
        if_s, if_d = f"mms{self.suffix}", f"mmd{self.suffix}"
        run(["ip", "link", "add", if_s, "netns", ns_s, "type", "veth", "peer", "name", if_d,
             "netns", ns_d])
        for ns, ifc, kip in ((ns_s, if_s, SRC_KERNEL_IP), (ns_d, if_d, DST_KERNEL_IP)):
            pre = ["ip", "netns", "exec", ns]
            run(pre + ["ip", "link", "set", "lo", "up"])
            run(pre + ["ip", "link", "set", "dev", ifc, "mtu", str(self.mtu)])
            run(pre + ["ip", "link", "set", "dev", ifc, "xdp", "off"], check=False)
            run(pre + ["ip", "addr", "add", f"{kip}/24", "dev", ifc])
            run(pre + ["ip", "link", "set", "dev", ifc, "up"])
        self.src = Host(ns_s, if_s, SRC_IP, SRC_KERNEL_IP, self._mac(ns_s, if_s))
        self.dst = Host(ns_d, if_d, DST_IP, DST_KERNEL_IP, self._mac(ns_d, if_d))

    @staticmethod
    def _mac(ns: str, ifc: str) -> str:
        out = run(["ip", "netns", "exec", ns, "ip", "-o", "link", "show", "dev", ifc]).stdout
        m = re.search(r"link/ether ([0-9a-f:]{17})", out)
        if not m:
            raise RuntimeError(f"no MAC on {ifc}: {out}")
        return m.group(1)

    # -- daemons -------------------------------------------------------
    def _daemon(self, role: str, host: Host, profile: str | None = None,
                extra: list[str] | None = None) -> Daemon:
        sets: dict[str, str] = {}
        if self.kind == "memif":
            sets = {"role": "server" if role == "src" else "client",
                    "socket": str(self.workdir / "memif.sock")}
        else:
            sets = {"iface": host.iface or ""}
        return Daemon(self.build / "control" / "memmotiond", self.workdir,
                      f"{role}-{self.suffix}", profile or self.kind, host.fabric_ip, sets, host.netns,
                      extra=extra if extra is not None else self.daemon_args.get(role, []),
                      prefix=host.prefix)

    def replace_daemon(self, role: str, extra: list[str], profile: str | None = None) -> Daemon:
        """Stops one host's daemon and starts it again with other options."""
        host = self.src if role == "src" else self.dst
        attr = f"{role}_daemon"
        getattr(self, attr).stop()
        setattr(self, attr, self._daemon(role, host, profile, extra).start())
        return getattr(self, attr)

    def exec(self, host: Host, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(host.exec_prefix() + cmd, capture_output=True, text=True, **kw)

    def set_loss(self, host: Host, percent: float, every_frame: bool = False) -> None:
        """Drops `percent` of the MMP frames arriving at a host's veth with
        the XDP programs of ebpf/: on AF_XDP the steering program the PMD
        loaded has a drop rate; elsewhere mm-xdp-loss attaches its own
        program (until loss_reports() or the fabric's end). every_frame:
        of all frames, the peer channel's TCP too (at 100 %: a cut link;
        mm-xdp-loss --all, not on AF_XDP)."""
        if every_frame and self.kind == "af_xdp-veth":
            raise ValueError("every_frame loss needs mm-xdp-loss, which AF_XDP's own XDP program excludes")
        if self.kind == "af_xdp-veth":
            run(host.exec_prefix() + [str(self.build / "ebpf" / "mm-xdp-steer"), "--iface",
                                      host.iface or "", "--loss", str(percent)])
            self.steered.append(host)
            return
        proc = subprocess.Popen(host.exec_prefix() + [
            str(self.build / "ebpf" / "mm-xdp-loss"), "--iface", host.iface or "",
            "--loss", str(percent), *(["--all"] if every_frame else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = ""
        while proc.stdout and "attached" not in said:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=10)
                raise RuntimeError(f"mm-xdp-loss did not attach to {host.iface}: {said}")
            said += line
        self.loss_procs.append(proc)

    def steer_stats(self, host: Host) -> dict[str, int]:
        """Counters of the AF_XDP steering program on a host's veth."""
        out = run(host.exec_prefix() + [str(self.build / "ebpf" / "mm-xdp-steer"), "--iface",
                                        host.iface or "", "--stats"]).stdout.split()
        return {out[i]: int(out[i + 1]) for i in range(0, len(out) - 1, 2)}

    def loss_reports(self) -> list[str]:
        """Stops the loss injectors; returns their 'saw N, dropped M' lines."""
        out = []
        for p in self.loss_procs:
            p.terminate()
            text, _ = p.communicate(timeout=10)
            out += [line for line in text.splitlines() if "dropped" in line]
        self.loss_procs.clear()
        for host in self.steered:
            st = self.steer_stats(host)
            out.append(f"mm_steer on {host.iface}: saw {st['steered'] + st['dropped']} MMP "
                       f"frames, dropped {st['dropped']}")
        self.steered.clear()
        return out

    def start_daemons(self) -> None:
        self.src.peer_port, self.dst.peer_port = 7472, 7471
        if self.peer_channel:
            key = self.workdir / "peer.key"
            key.write_text(secrets.token_hex(32))
            os.chmod(key, 0o600)
            base = ["--key-file", str(key), "--encrypt", self.peer_channel]
            # Both daemons listen for peers: a VM can then go back (ping-pong).
            self.daemon_args = {"src": base + ["--peer-listen", self.peer_address(self.src)] + self.daemon_args.get("src", []),
                                "dst": base + ["--peer-listen", self.peer_address()] + self.daemon_args.get("dst", [])}
        self.src_daemon = self._daemon("src", self.src).start()
        self.dst_daemon = self._daemon("dst", self.dst).start()

    def peer_address(self, host: "Host | None" = None) -> str:
        """ip:port of a daemon's peer channel (the destination's by default)."""
        h = host or self.dst
        return f"{h.kernel_ip or '127.0.0.1'}:{h.peer_port}"

    @contextlib.contextmanager
    def reversed(self):
        """The two hosts (and their daemons) swap roles inside the block: a
        VM migrated over goes back the same way (ping-pong)."""
        self.src, self.dst = self.dst, self.src
        self.src_daemon, self.dst_daemon = self.dst_daemon, self.src_daemon
        try:
            yield self
        finally:
            self.src, self.dst = self.dst, self.src
            self.src_daemon, self.dst_daemon = self.dst_daemon, self.src_daemon

    def start_session(self, sid: int, src_listen: str, dst_qemu_uri: str,
                      max_bandwidth: int = 0, pages: dict | None = None, vm: str | None = None) -> dict:
        """Prepares the destination, then starts the source; returns the
        source's reply (with the URI QEMU should migrate to). `pages` is the
        source's page policy (codec, zero, unchanged, dedupe). With a peer
        channel both happen in one `migrate` negotiated over it."""
        if self.peer_channel:
            args = {"session": sid, "peer": self.peer_address(), "dst-incoming": dst_qemu_uri,
                    "listen": src_listen, "encrypt": self.peer_channel}
            if max_bandwidth:
                args["max-bandwidth"] = max_bandwidth
            if pages is not None:
                args["pages"] = pages
            if vm:
                args["vm"] = vm
            return self.src_daemon.ctl.execute("migrate", **args)
        prep = {"qemu-uri": dst_qemu_uri}
        if pages is not None:
            prep["pages"] = pages  # the source's policy: the destination checks its PAGE_SAME records
        self.dst_daemon.ctl.execute("session-prepare", session=sid, **prep)
        args = {"listen": src_listen, "peer-ip": self.dst.fabric_ip}
        if max_bandwidth:
            args["max-bandwidth"] = max_bandwidth
        if pages is not None:
            args["pages"] = pages
        if self.dst.mac:
            args["peer-mac"] = self.dst.mac
        if vm:
            args["vm"] = vm
        return self.src_daemon.ctl.execute("session-start", session=sid, **args)

    def __enter__(self) -> "Fabric":
        try:
            self._make_hosts()
            self.start_daemons()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.loss_reports()
        except Exception as e:  # a test already failed; keep tearing down
            print(f"fabric: loss report unavailable: {e}")
        for d in ("src_daemon", "dst_daemon"):
            if hasattr(self, d):
                getattr(self, d).stop()
        for ns in self.namespaces:
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()

    def logs(self) -> str:
        out = []
        for d in ("src_daemon", "dst_daemon"):
            if hasattr(self, d):
                out.append(f"--- {getattr(self, d).name} ---\n{getattr(self, d).log_text()[-4000:]}")
        return "\n".join(out)

    def __exit__(self, *exc) -> None:
        self.close()
