"""The test guest (tests/guest): built once per build directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parents[2] / "guest"


def ensure_guest(build: Path) -> tuple[Path, Path]:
    """Builds (or reuses) the kernel and initramfs; returns their paths."""
    out = Path(build) / "guest"
    subprocess.run([str(GUEST_DIR / "build-guest.sh"), str(out)], check=True)
    return out / "vmlinuz", out / "initramfs.cpio.gz"
