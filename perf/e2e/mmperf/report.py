"""Results of a matrix run: raw runs as JSON and CSV, medians per scenario
and mode, a one-line ratio per scenario (MemoryMotion's best mode over
QEMU's best mode), and the Markdown report with its plots."""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

from .cpu import daemon_cpu_per_gib
from .harness import REPO
from .matrix import CAPS, MODES, WORKLOADS
from . import plots

# Each daemon's CPU seconds per GiB of guest stream: the source daemon per
# GiB read from its QEMU, the destination daemon per GiB written to its QEMU.
PER_GIB = ("cpu_daemon_src_s_per_gib", "cpu_daemon_dst_s_per_gib")
METRICS = ("total_ms", "setup_ms", "dst_downtime_ms", "downtime_ms", "wire_bytes", "qemu_bytes", "pages_per_s",
           "cpu_total_s", "cpu_migration_s", *PER_GIB)
CPU_PARTS = ("qemu_src", "qemu_dst", "daemon_src", "daemon_dst")
PART_NAMES = {"qemu_src": "source QEMU", "qemu_dst": "destination QEMU", "daemon_src": "source daemon",
              "daemon_dst": "destination daemon"}


def fill_derived(records: list[dict]) -> None:
    """Figures computed from a run's raw data, for runs recorded before the
    runner stored them (the daemons' CPU seconds per GiB)."""
    for r in records:
        if r.get("ok") and r.get("daemon_src") and any(k not in r for k in PER_GIB):
            r.update(daemon_cpu_per_gib(r))
# What the one-line summary compares (lower is better for all three).
RATIO_METRICS = (("total_ms", "total time"), ("dst_downtime_ms", "downtime"), ("wire_bytes", "wire bytes"))


def environment(profile: str, build: Path) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    rev = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    daemon = Path(build) / "control" / "memmotiond"
    built = (datetime.datetime.fromtimestamp(daemon.stat().st_mtime).isoformat(timespec="seconds")
             if daemon.exists() else "missing")
    return {"cpu": model, "build": f"{daemon} (built {built})", "cpus": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "qemu": (out(["/usr/bin/qemu-system-x86_64", "--version"]).splitlines() or ["?"])[0],
            "git": rev + (" (with uncommitted changes)" if dirty else ""), "profile": profile}


def merge(parts: list[Path]) -> tuple[dict, list[dict]]:
    """One matrix from several runs of the suite (a long matrix is run in
    pieces): the runs of every part's results.json, in matrix order (size,
    workload, cap; a part's own order within), repeats renumbered per
    scenario and mode, each run tagged with the part it came from. The parts
    must share NIC profile and QEMU transport; their commands, builds and
    sources are all kept in the metadata."""
    if not parts:
        raise ValueError("merge: no result folders given")
    metas, runs = [], []
    for d in parts:
        f = Path(d) / "results.json"
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"merge: cannot read {f}: {e}") from e
        metas.append(data["meta"])
        for r in data["runs"]:
            runs.append(dict(r, part=Path(d).name))
    transports = {m.get("qemu_transport") or "unix" for m in metas}
    if len(transports) > 1:
        raise ValueError(f"merge: the parts differ in qemu_transport ({', '.join(map(str, transports))}); "
                         "not one matrix")
    profiles = {m.get("environment", {}).get("profile") for m in metas}
    if len(profiles) > 1:
        raise ValueError(f"merge: the parts ran on different NIC profiles ({', '.join(map(str, profiles))})")
    wl, caps = list(WORKLOADS), list(CAPS)
    runs.sort(key=lambda r: (r["size_mib"], wl.index(r["workload"]) if r["workload"] in wl else len(wl),
                             caps.index(r["cap"]) if r["cap"] in caps else len(caps)))
    count: dict[tuple[str, str], int] = {}
    for r in runs:
        k = (r["scenario"], r["mode"])
        count[k] = count.get(k, 0) + 1
        r["repeat"] = count[k]
    reps = sorted(set(count.values()))
    env = dict(metas[0].get("environment", {}))
    env["build"] = " | ".join(f"{Path(d).name}: {m.get('environment', {}).get('build')}" for d, m in zip(parts, metas))
    env["git"] = ", ".join(dict.fromkeys(str(m.get("environment", {}).get("git")) for m in metas))
    meta = {"command": " ; ".join(f"[{Path(d).name}] {m.get('command', '?')}" for d, m in zip(parts, metas)),
            "started": min(m.get("started", "") for m in metas),
            "finished": max(m.get("finished", m.get("started", "")) for m in metas),
            "repeats": str(reps[0]) if len(reps) == 1 else f"{reps[0]}-{reps[-1]} (see the matrix below)",
            "environment": env, "smoke": False, "qemu_transport": metas[0].get("qemu_transport"),
            "pages_rejected": "; ".join(str(m["pages_rejected"]) for m in metas if m.get("pages_rejected")) or None,
            "merged_from": [str(d) for d in parts]}
    return meta, runs


# -- aggregation --------------------------------------------------------
def medians(records: list[dict]) -> list[dict]:
    """One row per (scenario, mode) in first-seen order."""
    fill_derived(records)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["scenario"], r["mode"]), []).append(r)
    rows = []
    for (scenario, mode), runs in groups.items():
        ok = [r for r in runs if r["ok"]]
        row = {"scenario": scenario, "mode": mode, "family": runs[0]["family"],
               "size_mib": runs[0]["size_mib"], "workload": runs[0]["workload"], "cap": runs[0]["cap"],
               "runs": len(runs), "ok": len(ok),
               "relay_fallback": any(r.get("pages_applied") is False for r in ok)}
        for m in METRICS:
            vals = [r[m] for r in ok if r.get(m) is not None]
            row[m] = statistics.median(vals) if vals else None
        for p in CPU_PARTS:
            vals = [r["cpu_s"][p] for r in ok if r.get("cpu_s")]
            row[f"cpu_{p}_s"] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows


def thread_medians(records: list[dict], scenario: str, mode: str, top: int = 3) -> dict[str, dict[str, float]]:
    """Per process, the median CPU seconds of its largest kinds of thread
    (runs' `cpu_threads_s`) over a scenario's and mode's verified runs."""
    runs = [r for r in records if r["scenario"] == scenario and r["mode"] == mode and r["ok"]
            and r.get("cpu_threads_s")]
    out = {}
    for proc in CPU_PARTS:
        kinds = dict.fromkeys(k for r in runs for k in r["cpu_threads_s"].get(proc, {}))
        med = {k: statistics.median([r["cpu_threads_s"].get(proc, {}).get(k, 0.0) for r in runs]) for k in kinds}
        best = sorted(med.items(), key=lambda kv: -kv[1])[:top]
        if best:
            out[proc] = dict(best)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Per scenario: for each ratio metric the best MemoryMotion and the best
    QEMU median row (None when that family has no successful run), the ratio,
    and notes on what makes the scenario's figures partial."""
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        metrics = {}
        for metric, _ in RATIO_METRICS:
            best = {}
            for fam in ("mm", "qemu"):
                cand = [r for r in mine if r["family"] == fam and r[metric] is not None]
                best[fam] = min(cand, key=lambda r: r[metric]) if cand else None
            ratio = None
            if best["mm"] and best["qemu"]:
                q = best["qemu"][metric]
                ratio = best["mm"][metric] / q if q else float("inf")
            metrics[metric] = {"mm": best["mm"], "qemu": best["qemu"], "ratio": ratio}
        notes = []
        if any(r["family"] == "qemu" and r["ok"] and r["wire_bytes"] is None for r in mine):
            notes.append("wire bytes of QEMU's compressed modes unknown over a unix socket")
        if any(r["relay_fallback"] for r in mine):
            notes.append("mm modes ran as a PLAIN RELAY: the daemon refused the page policy")
        out.append({"scenario": scenario, "metrics": metrics, "notes": notes})
    return out


def ratio_lines(rows: list[dict]) -> list[str]:
    """Per scenario: best MemoryMotion mode / best QEMU mode, per metric."""
    out = []
    for sc in ratios(rows):
        parts = []
        for metric, label in RATIO_METRICS:
            m = sc["metrics"][metric]
            if m["ratio"] is None:
                missing = "MemoryMotion" if not m["mm"] else "QEMU"
                parts.append(f"{label} n/a (no successful {missing} run)")
                continue
            mm, qm = m["mm"], m["qemu"]
            parts.append(f"{label} {m['ratio']:.2f} ({mm['mode']} {fmt(metric, mm[metric])} / "
                         f"{qm['mode']} {fmt(metric, qm[metric])})")
        note = "".join(f" [{n}]" for n in sc["notes"])
        out.append(f"{sc['scenario']}: MM/QEMU " + "; ".join(parts) + note)
    return out


def ratio_table(rows: list[dict]) -> list[str]:
    """The ratios as one Markdown table: a row per scenario, per metric the
    ratio and the two modes it compares (best MemoryMotion / best QEMU)."""
    head = "| scenario | " + " | ".join(f"{label}: MM/QEMU | best MM / best QEMU" for _, label in RATIO_METRICS) + " |"
    L = [head, "| --- |" + " ---: | --- |" * len(RATIO_METRICS)]
    for sc in ratios(rows):
        cells = []
        for metric, _ in RATIO_METRICS:
            m = sc["metrics"][metric]
            if m["ratio"] is None:
                cells += ["n/a", "—"]
                continue
            cells += [f"**{m['ratio']:.2f}**",
                      f"{m['mm']['mode']} {fmt(metric, m['mm'][metric])} / "
                      f"{m['qemu']['mode']} {fmt(metric, m['qemu'][metric])}"]
        note = "".join(f" ({n})" for n in sc["notes"])
        L.append(f"| {sc['scenario']}{note} | " + " | ".join(cells) + " |")
    return L


def fmt(metric: str, v) -> str:
    if v is None:
        return "—"
    if metric == "total_ms":
        return f"{v / 1000:.2f} s"
    if metric.endswith("downtime_ms"):
        return f"{v:.0f} ms"
    if metric.endswith("bytes"):
        return f"{v / 2**20:.1f} MiB"
    if metric == "pages_per_s":
        return f"{v / 1000:.0f} k"
    if metric.endswith("_s"):
        return f"{v:.2f}"
    return str(v)


# -- files ----------------------------------------------------------------
def write_json(out: Path, meta: dict, records: list[dict]) -> Path:
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": records}, indent=1, sort_keys=False))
    tmp.replace(path)
    return path


RUN_COLUMNS = ["scenario", "size_mib", "workload_mib", "workload", "cap", "cap_bytes_per_s", "mode", "repeat",
               "ok", "error", "qemu_transport", "total_ms", "setup_ms", "downtime_ms", "dst_downtime_ms", "qemu_bytes", "wire_bytes",
               "wire_bytes_reverse", "link_tx_bytes", "guest_ram_bytes", "pages_per_s", "cpu_total_s",
               *[f"cpu_{p}_s" for p in CPU_PARTS], "cpu_vcpu_qemu_src_s", "cpu_vcpu_qemu_dst_s",
               "cpu_migration_s", *PER_GIB, "daemon_src_qemu_bytes_in", "daemon_dst_qemu_bytes_out",
               "pages_applied", "retransmits", "boot_s", "started_at"]


def write_csv(out: Path, records: list[dict], rows: list[dict]) -> list[Path]:
    runs_csv = out / "runs.csv"
    with open(runs_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, RUN_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            flat = dict(r)
            for p in CPU_PARTS:
                flat[f"cpu_{p}_s"] = (r.get("cpu_s") or {}).get(p)
            for p in ("qemu_src", "qemu_dst"):
                flat[f"cpu_vcpu_{p}_s"] = (r.get("cpu_vcpu_s") or {}).get(p)
            flat["retransmits"] = (r.get("daemon_src") or {}).get("retransmits")
            flat["daemon_src_qemu_bytes_in"] = (r.get("daemon_src") or {}).get("qemu_bytes_in")
            flat["daemon_dst_qemu_bytes_out"] = (r.get("daemon_dst") or {}).get("qemu_bytes_out")
            w.writerow(flat)
    med_csv = out / "medians.csv"
    with open(med_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0].keys()) if rows else ["scenario"])
        w.writeheader()
        w.writerows(rows)
    return [runs_csv, med_csv]


def notes(transport: str, profile: str | None = None) -> str:
    if profile == "memif":
        fabric = """The daemons meet over memif (shared memory between the two
  processes, NIC profile `memif`), so no kernel network work is in their
  figures; QEMU's own modes still cross a veth (TCP)."""
    else:
        fabric = f"""The daemons' fabric is NIC profile `{profile or '?'}`; the kernel's
  work for it (AF_PACKET on a veth) is in their figures too."""
    if transport == "tcp":
        qemu_wire = """QEMU modes migrate over TCP on a veth pair of their own between
  the two namespaces (same MTU as the daemons' fabric) and their wire bytes
  are that veth's transmit counter on the source side: Ethernet + IPv4 +
  TCP + QEMU's stream. (A veth counts a TSO super-frame's headers once, so
  this is up to ~1 % under what a NIC would send at MTU 9000.)"""
    else:
        qemu_wire = """QEMU modes migrate over a unix socket and their wire bytes are
  QEMU's `ram.transferred`: stream bytes, no TCP/IP/Ethernet headers (over
  a real network add ~3 % at MTU 1500, under 1 % at MTU 9000). With
  multifd-compression that figure is *not* what was sent (QEMU 7.2 counts
  multifd pages before compressing them), so it is left out (`—`); run
  with `--qemu-transport tcp` to measure it."""
    return f"""\
How to read this (and what it does not say):

- **Wire bytes.** {qemu_wire}
  MemoryMotion modes: the source daemon's `wire_bytes_tx`, whole frames
  (Ethernet + IPv4 + UDP + MMP header) with retransmissions, source to
  destination (the fabric veth's own counter is in the raw runs as
  `link_tx_bytes`, a check). Reverse directions (ACKs, return path) are in
  the raw runs. `from QEMU` is QEMU's own `ram.transferred` everywhere.
- **Link caps** are a true cap on wire bytes for everyone, for the whole
  migration: QEMU modes over their TCP link get `tc tbf` at the cap on the
  source's side of that veth (QEMU's `max-bandwidth` lifted); mm modes get
  the MMP pacer (QEMU into the daemon unlimited), headers and
  retransmissions included. QEMU's own `max-bandwidth` would not do: QEMU
  lifts it for the final stop-and-copy (512 MiB typical at "1G": downtime
  18 ms with it, 170 ms on a tbf-capped link) and counts multifd pages
  before zstd (a capped zstd mode gained nothing from compressing). With
  `--qemu-transport unix` there is no link to shape and QEMU's
  `max-bandwidth` is used, with both flaws.
- **Downtime** is measured at the destination: source QEMU `STOP` event to
  the destination QEMU's `MIGRATION completed` event (QMP event timestamps,
  one host clock). QEMU's own `downtime` figure is shown too.
- **Total time** is QEMU's `total-time` on the source; pages/s is guest RAM
  pages (all of them) divided by it.
- **CPU seconds** are utime+stime of each process (all threads) from the
  `migrate` command to the end of the migration, from `/proc/<pid>/stat`.
  The kernel's TCP (QEMU modes) and AF_PACKET (daemons) work is charged to
  whichever process runs when it happens -- mostly, not only, the process
  that sent. The daemons (which poll with back-off) run in the QEMU modes
  too, so their idle cost shows there. A QEMU's CPU includes its guest
  running (the source's vCPU runs the workload all along, the
  destination's from the switchover on), so a longer migration costs more
  CPU seconds in every mode; **CPU s without the guests** takes the vCPU
  threads' time out (QEMU run with `debug-threads=on`; "—" for runs made
  before this was measured).
- **Daemon CPU s per GiB**: the source daemon's CPU seconds per GiB it read
  from its QEMU (`qemu_bytes_in`), the destination daemon's per GiB it
  wrote to its QEMU (`qemu_bytes_out`), each over the whole migration
  (idle polling included). {fabric}
- **CPU by kind of thread** (runs with `cpu_threads_s`): QEMU runs with
  `debug-threads=on`, so its threads have names (`live_migration`,
  `multifdsend_*`, `multifdrecv_*`, `CPU */TCG` the guest); a daemon's are
  its DPDK lcores (`rte-worker-*`) and main thread. Sampled every 200 ms;
  what threads that ended between samples ran is `(exited)`.
- Every run ends with guest RAM compared byte for byte (source stopped,
  destination paused) and the destination guest resumed; a run that fails
  this is listed under failed runs and never counted in a median.
- **Setup** (QEMU's `setup-time`) is part of the total. Destination QEMUs
  start with `-incoming defer` and listen once their capabilities are set,
  as libvirt does: started with `-incoming URI`, QEMU 7.2 listens before
  multifd is on, with a backlog of 1, and over TCP each multifd migration
  then spends about 1 s in setup on a SYN retransmission.
- Same `downtime-limit` (300 ms) everywhere; multifd modes use 4 channels;
  the mm modes run QEMU multifd 4 into the source daemon, with zero pages,
  dedupe and the unchanged-page filter on (memmotiond's defaults); each
  PAGE_SAME carries the page's hash, which the destination checks.
- Both "hosts" are network namespaces on one machine, the VMs run under
  TCG, and QEMUs, daemons and guests share the machine's cores: absolute
  figures are this machine's; the ratios are the point.
"""


def write_markdown(out: Path, meta: dict, records: list[dict], rows: list[dict],
                   plot_files: dict[tuple[int, str], list[tuple[str, Path]]]) -> Path:
    env = dict(meta.get("environment", {}))
    if isinstance(env.get("qemu"), list):
        env["qemu"] = " ".join(env["qemu"])
    L: list[str] = []
    L.append(f"# MemoryMotion vs QEMU migration ({meta.get('started', '')[:10]})")
    L.append("")
    L.append(f"Machine: {env.get('cpu')}, {env.get('cpus')} CPUs, Linux {env.get('kernel')}, "
             f"{env.get('qemu')}; source tree {env.get('git')}, daemon `{env.get('build')}` on NIC "
             f"profile `{env.get('profile')}`. Command: `{meta.get('command', '')}`")
    L.append("")
    ok = sum(r["ok"] for r in records)
    L.append(f"{len(records)} runs, {ok} verified, {len(records) - ok} failed; repeats "
             f"{meta.get('repeats')}, figures are medians of the verified runs.")
    if meta.get("pages_rejected"):
        L.append("")
        L.append(f"**WARNING: memmotiond refused the page policy (`{meta['pages_rejected']}`); the "
                 "mm-* runs marked `relay` ran without it (pages=None) and are NOT the named codec's "
                 "figures.**")
    L.append("")
    L.append("## Summary: best MemoryMotion mode / best QEMU mode (below 1: MemoryMotion better)")
    L.append("")
    L += ratio_table(rows)
    L.append("")
    L.append(notes(meta.get("qemu_transport", "unix"), env.get("profile")))
    L.append("## Per scenario (medians)")
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        L.append("")
        L.append(f"### {scenario}")
        L.append("")
        L.append("| mode | ok/runs | total time | of which setup | downtime at dst | downtime (QEMU) | wire | "
                 "from QEMU | pages/s | CPU s: QEMU src / dst, daemon src / dst | CPU s total | "
                 "CPU s without the guests | daemon CPU s per GiB: src (from QEMU) / dst (to QEMU) |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in (r for r in rows if r["scenario"] == scenario):
            mode = r["mode"] + (" (relay)" if r["relay_fallback"] else "")
            cpu = " / ".join(fmt("x_s", r[f"cpu_{p}_s"]) for p in CPU_PARTS[:2]) + ", " + \
                " / ".join(fmt("x_s", r[f"cpu_{p}_s"]) for p in CPU_PARTS[2:])
            L.append(f"| {mode} | {r['ok']}/{r['runs']} | {fmt('total_ms', r['total_ms'])} | "
                     f"{fmt('dst_downtime_ms', r['setup_ms'])} | "
                     f"{fmt('dst_downtime_ms', r['dst_downtime_ms'])} | {fmt('downtime_ms', r['downtime_ms'])} | "
                     f"{fmt('wire_bytes', r['wire_bytes'])} | {fmt('qemu_bytes', r['qemu_bytes'])} | "
                     f"{fmt('pages_per_s', r['pages_per_s'])} | {cpu} | {fmt('x_s', r['cpu_total_s'])} | "
                     f"{fmt('x_s', r['cpu_migration_s'])} | "
                     + ("—" if r[PER_GIB[0]] is None and r[PER_GIB[1]] is None else
                        " / ".join(fmt("x_s", r[k]) for k in PER_GIB)) + " |")
        lines = []
        for r in (r for r in rows if r["scenario"] == scenario):
            th = thread_medians(records, scenario, r["mode"])
            if th:
                lines.append(f"- `{r['mode']}`: " + "; ".join(
                    f"{PART_NAMES[p]} " + ", ".join(f"{k} {v:.2f}" for k, v in kinds.items())
                    for p, kinds in th.items()))
        if lines:
            L.append("")
            L.append("CPU seconds by kind of thread (median, the largest three per process):")
            L.append("")
            L += lines
    if plot_files:
        L.append("")
        L.append("## Plots (medians; x: workload, bars: modes)")
        for (size_mib, cap), files in plot_files.items():
            L.append("")
            L.append(f"### {size_mib} MiB guest, cap {cap}")
            L.append("")
            for title, path in files:
                L.append(f"![{title}]({path.name})")
    failed = [r for r in records if not r["ok"]]
    L.append("")
    L.append("## Failed runs")
    L.append("")
    if not failed:
        L.append("None.")
    for r in failed:
        L.append(f"- {r['scenario']} {r['mode']} #{r['repeat']}: {r['error']}")
    L.append("")
    L.append("## Matrix")
    L.append("")
    sizes = sorted({(r["size_mib"], r["workload_mib"]) for r in records})
    L.append("Sizes: " + ", ".join(f"{s} MiB guest ({w} MiB filled by memload)" for s, w in sizes) + ".")
    L.append("")
    for w in dict.fromkeys(r["workload"] for r in records):
        L.append(f"- workload `{w}`: {WORKLOADS[w].what}")
    for c in dict.fromkeys(r["cap"] for r in records):
        b = CAPS[c]
        L.append(f"- cap `{c}`: " + (f"{b} bytes/s" if b else "none (QEMU max-bandwidth 10 GiB/s, no pacer)"))
    via = ("TCP on a veth of its own" if meta.get("qemu_transport") == "tcp" else "a unix socket")
    for m in dict.fromkeys(r["mode"] for r in records):
        mode = MODES[m]
        what = (f"through the daemons, QEMU multifd {mode.multifd}, page policy {mode.pages}"
                if mode.via_daemons else
                f"QEMU to QEMU over {via}, multifd {mode.multifd or 'off'}, "
                f"compression {mode.qemu_compression}")
        L.append(f"- mode `{m}`: {what}")
    L.append("")
    L.append("Raw runs: `results.json` (everything, QEMU's `ram` stats and the daemons' session "
             "counters included), `runs.csv`; medians: `medians.csv`.")
    path = out / "report.md"
    path.write_text("\n".join(L) + "\n")
    return path


def write_all(out: Path, meta: dict, records: list[dict]) -> dict[str, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    fill_derived(records)
    rows = medians(records)
    files = {"json": [write_json(out, meta, records)], "csv": write_csv(out, records, rows)}
    plot_files = plots.draw(out, rows)
    files["png"] = [p for fs in plot_files.values() for _, p in fs]
    files["md"] = [write_markdown(out, meta, records, rows, plot_files)]
    summary = out / "summary.txt"
    summary.write_text("\n".join(ratio_lines(rows)) + "\n")
    files["txt"] = [summary]
    return files
