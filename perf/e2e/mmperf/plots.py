"""PNG plots of the medians with gnuplot (Debian's gnuplot-nox): for each
guest size and link cap, one clustered bar chart per metric, workloads on
the x axis and one bar per mode (QEMU modes in blues, MemoryMotion in
oranges)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

GNUPLOT = "gnuplot"
COLOURS = {"qemu-direct": "#a0a0a0", "qemu-multifd4": "#6f8fbf", "qemu-multifd4-zstd": "#2f4f8f",
           "mm-relay": "#b5b58a", "mm-none": "#f4c27a", "mm-lz4": "#e8892b", "mm-zstd": "#c2551a",
           "mm-deflate": "#7a2e0e"}
# metric -> (file stem, title, y label, scale to the unit)
PLOTS = [("total_ms", "total", "total migration time", "s", 1e-3),
         ("dst_downtime_ms", "downtime", "downtime at the destination", "ms", 1.0),
         ("wire_bytes", "wire", "bytes on the wire", "MiB", 1 / 2**20),
         ("cpu_total_s", "cpu", "CPU seconds (both QEMUs + both daemons)", "s", 1.0)]


def available() -> bool:
    return shutil.which(GNUPLOT) is not None


def draw(out: Path, rows: list[dict]) -> dict[tuple[int, str], list[tuple[str, Path]]]:
    """Returns {(size MiB, cap): [(title, png path)]}; nothing if gnuplot is missing."""
    if not available():
        print("perf: gnuplot not found (apt-get install gnuplot-nox): no plots", flush=True)
        return {}
    done: dict[tuple[int, str], list[tuple[str, Path]]] = {}
    groups = dict.fromkeys((r["size_mib"], r["cap"]) for r in rows)
    for size_mib, cap in groups:
        mine = [r for r in rows if r["size_mib"] == size_mib and r["cap"] == cap]
        workloads = list(dict.fromkeys(r["workload"] for r in mine))
        modes = list(dict.fromkeys(r["mode"] for r in mine))
        relay = {r["mode"] for r in mine if r["relay_fallback"]}
        for metric, stem, title, unit, scale in PLOTS:
            cell = {(r["workload"], r["mode"]): r[metric] for r in mine}
            if all(v is None for v in cell.values()):
                continue
            base = out / f"{stem}-{size_mib}MiB-{cap}"
            data = base.with_suffix(".dat")
            lines = ["workload " + " ".join(f'"{m} (relay)"' if m in relay else f'"{m}"' for m in modes)]
            for w in workloads:
                vals = [cell.get((w, m)) for m in modes]
                lines.append(f'"{w}" ' + " ".join("NaN" if v is None else f"{v * scale:.6g}" for v in vals))
            data.write_text("\n".join(lines) + "\n")
            png = base.with_suffix(".png")
            series = ", ".join(
                f"'{data}' using {i + 2}:xtic(1) title columnheader({i + 2}) "
                f"lc rgb '{COLOURS.get(m, '#808080')}'" if i == 0 else
                f"'' using {i + 2} title columnheader({i + 2}) lc rgb '{COLOURS.get(m, '#808080')}'"
                for i, m in enumerate(modes))
            script = f"""
set terminal pngcairo size 960,480 noenhanced font ',10'
set output '{png}'
set title '{title}, {size_mib} MiB guest, cap {cap} (median; lower is better)'
set ylabel '{unit}'
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set datafile missing 'NaN'
set key outside right top
set yrange [0:*]
set grid ytics
plot {series}
"""
            r = subprocess.run([GNUPLOT], input=script, capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or not png.exists():
                print(f"perf: gnuplot failed on {png.name}: {r.stderr.strip()[-500:]}", flush=True)
                continue
            data.unlink()
            done.setdefault((size_mib, cap), []).append((f"{title} ({unit})", png))
    return done
