"""The comparison matrix: migration modes, VM sizes, guest workloads and
link caps, each with the short name the command line and the reports use."""

from __future__ import annotations

from dataclasses import dataclass, field

MM_CODECS = ("none", "lz4", "zstd", "deflate", "auto")


@dataclass(frozen=True)
class Mode:
    name: str
    via_daemons: bool          # QEMU -> memmotiond -> MMP -> memmotiond -> QEMU
    multifd: int = 0           # QEMU multifd channels (0: one stream)
    qemu_compression: str = "none"  # QEMU's multifd-compression
    pages: dict | None = None  # MemoryMotion page policy (session-start `pages`)

    @property
    def family(self) -> str:
        return "mm" if self.via_daemons else "qemu"


MODES: dict[str, Mode] = {m.name: m for m in [
    Mode("qemu-direct", False),
    Mode("qemu-multifd4", False, multifd=4),
    Mode("qemu-multifd4-zstd", False, multifd=4, qemu_compression="zstd"),
    *[Mode(f"mm-{c}", True, multifd=4,
           pages={"codec": c, "zero": True, "unchanged": True, "dedupe": True})
      for c in MM_CODECS],
    # The same without PAGE_DELTA (pages sent again go whole): what the
    # delta carries, in the same run (issue 12). Not in the default set.
    *[Mode(f"mm-{c}-nodelta", True, multifd=4,
           pages={"codec": c, "zero": True, "unchanged": True, "dedupe": True, "delta": False})
      for c in MM_CODECS],
    # The same with the unchanged filter off (it is on by default): what
    # PAGE_SAME and the destination's epoch gate for checking it carry and
    # cost, in the same run (issue 12). Not in the default set.
    *[Mode(f"mm-{c}-nosame", True, multifd=4,
           pages={"codec": c, "zero": True, "unchanged": False, "dedupe": True})
      for c in MM_CODECS],
    # The daemons as a byte-exact relay (no page policy): what MemoryMotion
    # costs before its page pipeline. Not in the default set.
    Mode("mm-relay", True, multifd=4),
]}
DEFAULT_MODES = ["qemu-direct", "qemu-multifd4", "qemu-multifd4-zstd"] + [f"mm-{c}" for c in MM_CODECS]


@dataclass(frozen=True)
class Workload:
    name: str
    dirty: int        # pages/s memload dirties (memload.dirty)
    same: int         # % of dirtied pages rewritten with identical bytes (memload.same)
    mix: str          # memload.mix
    what: str
    lines: int = 0    # cache lines changed per dirtied page, 0: the whole page (memload.lines)
    hot: int = 0      # % of pages that take 90 % of the writes, 0: uniform (memload.hot)

    def cmdline(self, workload_mib: int) -> str:
        return (f"memload.mib={workload_mib} memload.dirty={self.dirty} "
                f"memload.same={self.same} memload.mix={self.mix} "
                f"memload.lines={self.lines} memload.hot={self.hot}")


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("idle", 0, 30, "idle", "memory filled once, never dirtied (memload mix=idle)"),
    Workload("typical", 2000, 30, "default", "2000 pages/s dirtied, 30 % of them rewritten identically"),
    Workload("heavy", 12000, 30, "default", "12000 pages/s (47 MiB/s) dirtied, 30 % identical"),
    Workload("rewrite-identical", 12000, 100, "default",
             "12000 pages/s dirtied, all rewritten with the bytes they held (memload.same=100)"),
    # Partial-page writes: what a delta against the page's last version
    # can shrink (issue 12); the whole-page workloads above stay the default.
    Workload("typical-partial", 2000, 30, "default",
             "2000 pages/s dirtied, 30 % identical, the rest with 4 of 64 cache lines changed",
             lines=4),
    Workload("heavy-partial", 12000, 30, "default",
             "12000 pages/s dirtied, 30 % identical, the rest with 4 of 64 cache lines changed; "
             "90 % of the writes on a hot 10 % of pages", lines=4, hot=10),
]}
DEFAULT_WORKLOADS = ["idle", "typical", "heavy", "rewrite-identical"]


@dataclass(frozen=True)
class Size:
    ram_mib: int
    workload_mib: int  # how much of it memload fills

    @property
    def name(self) -> str:
        return f"{self.ram_mib}MiB"


def size(ram_mib: int, workload_mib: int | None = None) -> Size:
    """Guest RAM with memload filling three quarters of it unless told."""
    return Size(ram_mib, workload_mib or ram_mib * 3 // 4)


DEFAULT_SIZES = [512, 2048]

# Link caps in bytes/s (0: unlimited). QEMU's max-bandwidth for the direct
# modes, the MMP pacer's max-bandwidth (wire bytes/s) for the mm modes.
CAPS: dict[str, int] = {"unlimited": 0, "10G": 10_000_000_000 // 8, "1G": 1_000_000_000 // 8}
DEFAULT_CAPS = list(CAPS)


def cap_bytes(text: str) -> int:
    """A link cap given as text -- a name of CAPS or bits/s with a K, M or G
    suffix ("2.5G", "500M") -- in bytes/s (0: unlimited)."""
    t = text.strip()
    if t in CAPS:
        return CAPS[t]
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:].upper())
    try:
        bits = float(t[:-1]) * scale if scale else float(t)
    except ValueError:
        bits = -1
    if bits <= 0:
        raise ValueError(f"cap {text!r}: not 'unlimited' nor bits/s like 1G, 2.5G, 500M")
    return int(bits) // 8


@dataclass(frozen=True)
class Scenario:
    size: Size
    workload: Workload
    cap: str
    # Ping-pong (issue 12): migrate A -> B, let the guest run this many
    # seconds on B, migrate B -> A; the second migration is what is measured.
    ping_pong_s: float | None = None

    @property
    def key(self) -> str:
        k = f"{self.size.name}/{self.workload.name}/{self.cap}"
        return k if self.ping_pong_s is None else f"{k}/pingpong-{self.ping_pong_s:g}s"

    @property
    def cap_bytes(self) -> int:
        return CAPS[self.cap]


@dataclass
class Selection:
    sizes: list[Size]
    workloads: list[Workload]
    caps: list[str]
    modes: list[Mode]
    repeats: int
    ping_pong: list[float] | None = None
    scenarios: list[Scenario] = field(init=False)

    def __post_init__(self) -> None:
        pp = self.ping_pong or [None]
        self.scenarios = [Scenario(s, w, c, t) for s in self.sizes for w in self.workloads
                          for c in self.caps for t in pp]

    def runs(self) -> int:
        return len(self.scenarios) * len(self.modes) * self.repeats


def pick(names: list[str], table: dict, what: str) -> list:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(table)})")
    return [table[n] for n in names]
