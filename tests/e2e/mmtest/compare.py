"""Byte-for-byte comparison of two guest RAM dumps, reporting which pages
differ (so a failure says where, not only that)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
CHUNK = 4 << 20


@dataclass
class DumpDiff:
    size_a: int
    size_b: int
    differing_pages: int = 0
    first_pages: list[int] = field(default_factory=list)
    # Per first page: what the two sides hold, so a mismatch hints at its
    # path (a zero page where data belongs, an older copy, a few bytes off).
    details: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.size_a == self.size_b and self.differing_pages == 0

    def __str__(self) -> str:
        if self.identical:
            return f"identical ({self.size_a} bytes)"
        offs = ", ".join(f"0x{p * PAGE:x}" for p in self.first_pages)
        more = f" [{'; '.join(self.details)}]" if self.details else ""
        return (f"{self.differing_pages} pages differ (sizes {self.size_a} / {self.size_b}); "
                f"first at {offs}{more}")


def describe(pa: bytes, pb: bytes) -> str:
    """One differing page: how many bytes differ and where, and whether a
    side is all zero."""
    n = sum(1 for x, y in zip(pa, pb) if x != y) + abs(len(pa) - len(pb))
    idx = [i for i, (x, y) in enumerate(zip(pa, pb)) if x != y]
    span = f"bytes {idx[0]}..{idx[-1]}" if idx else "length"
    def kind(p: bytes) -> str:
        return "zero" if not any(p) else f"data({len(set(p))} distinct byte values)"
    return f"{n} bytes differ at {span}; source {kind(pa)}, destination {kind(pb)}"


def compare_dumps(a: Path, b: Path) -> DumpDiff:
    diff = DumpDiff(Path(a).stat().st_size, Path(b).stat().st_size)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        base = 0
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if not ca and not cb:
                break
            if ca != cb:
                for off in range(0, max(len(ca), len(cb)), PAGE):
                    if ca[off:off + PAGE] != cb[off:off + PAGE]:
                        diff.differing_pages += 1
                        if len(diff.first_pages) < 8:
                            diff.first_pages.append((base + off) // PAGE)
                            if len(diff.details) < 3:
                                diff.details.append(f"0x{base + off:x}: " +
                                                    describe(ca[off:off + PAGE], cb[off:off + PAGE]))
            base += CHUNK
    return diff
