"""libvirt hosts for tests: Debian's libvirtd, run by hand (no systemd), in a
fabric host's network namespace plus a mount namespace of its own. There
/run, /etc/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt
are the host's own directories, so both hosts have the same paths
(/run/memmotion/..., /run/libvirt/...) holding different files, as two
machines would; each has its own hostname and host UUID, or libvirt
refuses to migrate a domain "to the same host". Everything outside those
directories (the build tree, /tmp) is shared, as a cluster's shared storage
would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .fabric import Fabric, require_tools
from .vm import TCG_RAM_PAD_KIB

LIBVIRTD = "/usr/sbin/libvirtd"
# Each host's directory under its root (left) is bound over the path
# libvirtd and QEMU use (right).
HOST_DIRS = {"run": "/run", "etc": "/etc/libvirt", "lib": "/var/lib/libvirt",
             "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}
# The emulator libvirt starts: QEMU with the RAM padding vm.py explains.
QEMU_WRAPPER = Path(__file__).resolve().parent / "qemu-tcg-pad"

# Runs inside `unshare --mount --uts`: the host's directories over the
# system's, then libvirtd in the foreground.
_ENTER = """set -e
hostname "$1"; root="$2"; shift 2
for pair in "$@"; do
  mkdir -p "$root/${pair%%=*}" "${pair#*=}"
  mount --bind "$root/${pair%%=*}" "${pair#*=}"
done
exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf
"""

# QEMU runs as root with no security driver, cgroups or namespaces of
# libvirt's: none of them exist in a test container without systemd.
QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class LibvirtError(Exception):
    pass


class LibvirtHost:
    def __init__(self, name: str, netns: str, workdir: Path, uuid: str):
        self.name = name
        self.netns = netns
        self.root = Path(workdir) / f"libvirt-{name}"
        self.uuid = uuid
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """How anyone on this machine (the other host's libvirtd included)
        reaches this libvirtd."""
        return f"qemu+unix:///system?socket={self.root}/run/libvirt/libvirt-sock"

    def path(self, inside: str) -> Path:
        """Where a path of this host (under one of HOST_DIRS) is seen from outside."""
        for sub, mnt in HOST_DIRS.items():
            if inside == mnt or inside.startswith(mnt + "/"):
                return self.root / sub / inside[len(mnt):].lstrip("/")
        raise ValueError(f"{inside} is not one of the host's own directories")

    def prefix(self) -> list[str]:
        """Runs a command inside this host (its network and mount namespaces)."""
        assert self.proc is not None, "libvirt host not started"
        return ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "-u"]

    def start(self, timeout: float = 120) -> "LibvirtHost":
        for sub in HOST_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "run" / "memmotion").mkdir(exist_ok=True)
        (self.root / "etc" / "libvirtd.conf").write_text(
            f'host_uuid = "{self.uuid}"\n'
            'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        (self.root / "etc" / "qemu.conf").write_text(QEMU_CONF)
        self.log = open(self.root / "libvirtd.out", "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", _ENTER, "sh", self.name, str(self.root)] + [f"{k}={v}" for k, v in HOST_DIRS.items()],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LibvirtError(f"libvirtd on {self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_text()}")
            r = subprocess.run(["virsh", "-c", self.uri, "list", "--all"], capture_output=True, text=True)
            if r.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise LibvirtError(f"libvirtd on {self.name} not answering after {timeout} s: "
                                   f"{r.stderr.strip()}\n{self.log_text()}")
            time.sleep(0.3)

    def virsh(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        r = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LibvirtError(f"virsh {' '.join(args)} on {self.name}: {r.stderr.strip()}")
        return r.stdout

    def domstate(self, dom: str) -> str:
        r = subprocess.run(["virsh", "-c", self.uri, "domstate", dom], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "absent"

    def running(self) -> list[str]:
        return [n for n in self.virsh("list", "--name").split() if n]

    def qmp(self, dom: str, cmd: str, **args) -> dict:
        req = {"execute": cmd, **({"arguments": args} if args else {})}
        reply = json.loads(self.virsh("qemu-monitor-command", dom, json.dumps(req)))
        if "error" in reply:
            raise LibvirtError(f"{cmd} on {self.name}: {reply['error']}")
        return reply["return"]

    def pmemsave(self, dom: str, size: int, path: Path) -> Path:
        self.qmp(dom, "pmemsave", val=0, size=size, filename=str(path))
        return path

    def log_text(self, n: int = 3000) -> str:
        out = ""
        for p in (self.root / "libvirtd.out", self.root / "log" / "libvirtd.log"):
            try:
                out += f"--- {p} ---\n" + p.read_text(errors="replace")[-n:] + "\n"
            except OSError:
                pass
        for p in sorted((self.root / "log" / "qemu").glob("*.log")):
            out += f"--- {p} ---\n" + p.read_text(errors="replace")[-n:] + "\n"
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for dom in self.running():
                self.virsh("destroy", dom, check=False)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # QEMUs libvirtd started and left (they outlive it by design).
        for pidfile in (self.root / "run" / "libvirt" / "qemu").glob("*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.log.close()
        self.proc = None


def domain_xml(name: str, kernel: Path, initrd: Path, ram_mib: int, append: str, console: str) -> str:
    """The test guest as a libvirt domain: TCG, direct kernel boot, the
    serial console into a file of the host it runs on. libvirt rounds
    <memory> to whole MiB -- a multiple of 256 KiB, which QEMU 7.2's TCG
    migration gets wrong (vm.py) -- so the emulator is QEMU_WRAPPER, which
    adds the padding on every host alike."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='KiB'>{ram_mib << 10}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 {append}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU_WRAPPER}</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='{console}'/></serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def guest_ram_bytes(ram_mib: int) -> int:
    """What QEMU_WRAPPER makes of <memory> = ram_mib MiB."""
    return (ram_mib << 20) + (TCG_RAM_PAD_KIB << 10)


class LibvirtFabric(Fabric):
    """Fabric (two hosts joined by a veth, a memmotiond on each) whose hosts
    also run libvirtd: the daemons run inside the hosts' mount namespaces,
    where the migration sockets libvirt hands QEMU live."""

    UUIDS = {"src": "6d6d6c76-0000-4000-8000-000000000001", "dst": "6d6d6c76-0000-4000-8000-000000000002"}

    def __init__(self, *args, **kw):
        require_tools("virsh", "nsenter", "unshare")
        if not os.path.exists(LIBVIRTD):
            raise SystemExit(f"{LIBVIRTD} is missing (apt-get install libvirt-daemon-system; "
                             "scripts/mm setup installs it)")
        super().__init__(*args, **kw)
        self.libvirt: dict[str, LibvirtHost] = {}

    def _make_hosts(self) -> None:
        super()._make_hosts()
        for role, host in (("src", self.src), ("dst", self.dst)):
            assert host.netns, "libvirt hosts need network namespaces"
            lv = LibvirtHost(f"mm{role}-{self.suffix}", host.netns, self.workdir, self.UUIDS[role])
            self.libvirt[role] = lv
            lv.start()
            host.prefix = lv.prefix()

    def close(self) -> None:
        for lv in self.libvirt.values():
            lv.stop()
        super().close()

    def logs(self) -> str:
        return super().logs() + "\n" + "\n".join(lv.log_text() for lv in self.libvirt.values())

