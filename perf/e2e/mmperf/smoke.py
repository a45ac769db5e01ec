"""What `--smoke` proves: the report files exist and every figure is sane
(verified runs, positive times, wire bytes within plausible bounds of the
guest's RAM, CPU charged to the QEMUs), not that anything is fast."""

from __future__ import annotations

from pathlib import Path


def check(out: Path, records: list[dict], files: dict[str, list[Path]], want_plots: bool) -> list[str]:
    problems: list[str] = []
    for kind in ("json", "csv", "md", "txt"):
        for p in files.get(kind, []):
            if not p.exists() or p.stat().st_size == 0:
                problems.append(f"{p} missing or empty")
    if want_plots:
        if not files.get("png"):
            problems.append("no plots produced")
        for p in files.get("png", []):
            if not p.exists() or p.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
                problems.append(f"{p} is not a PNG")
    report = out / "report.md"
    if report.exists() and "MM/QEMU" not in report.read_text():
        problems.append("report.md has no ratio summary line")
    if not records:
        problems.append("no runs")
    for r in records:
        tag = f"{r['mode']} #{r['repeat']}"
        if not r["ok"]:
            problems.append(f"{tag} failed: {r['error']}")
            continue
        if not (r.get("verify") or "").startswith("guest RAM identical"):
            problems.append(f"{tag}: verification says {r.get('verify')!r}")
        for k in ("total_ms", "dst_downtime_ms", "downtime_ms", "pages_per_s"):
            if not r.get(k) or r[k] <= 0:
                problems.append(f"{tag}: {k} = {r.get(k)} (must be positive)")
        if r.get("dst_downtime_ms") and r.get("total_ms") and r["dst_downtime_ms"] > r["total_ms"] + 1000:
            problems.append(f"{tag}: downtime {r['dst_downtime_ms']} ms beyond the total {r['total_ms']} ms")
        ram, wire, qemu = r.get("guest_ram_bytes") or 0, r.get("wire_bytes") or 0, r.get("qemu_bytes") or 0
        # Lower bound: the workload's random pages alone are ~15 % of what
        # memload fills; upper: a few passes over all of RAM.
        lo, hi = r["workload_mib"] * 2**20 * 0.10, ram * 4
        if not lo <= wire <= hi:
            problems.append(f"{tag}: {wire / 2**20:.1f} MiB on the wire, outside "
                            f"{lo / 2**20:.0f}..{hi / 2**20:.0f} MiB for a {ram / 2**20:.0f} MiB guest")
        if r["family"] == "mm":
            ds = r.get("daemon_src") or {}
            took = ds.get("qemu_bytes_in") or 0
            # QEMU's ram.transferred leaves out device state and stream headers.
            if not 0.9 * qemu <= took <= 1.25 * qemu + (8 << 20):
                problems.append(f"{tag}: source daemon took {took} B from QEMU, "
                                f"QEMU says it sent {qemu} B")
            if r.get("pages_applied") is not True and wire < qemu:
                problems.append(f"{tag}: relay sent fewer wire bytes ({wire}) than QEMU's stream ({qemu})")
            per = [r.get("cpu_daemon_src_s_per_gib"), r.get("cpu_daemon_dst_s_per_gib")]
            if not all(v is not None and v > 0 for v in per):
                problems.append(f"{tag}: daemons' CPU s per GiB not measured (source, destination: {per})")
            if ds.get("multifd_channels") != 4:
                problems.append(f"{tag}: {ds.get('multifd_channels')} multifd channels relayed, expected 4")
        cpu = r.get("cpu_s") or {}
        if not cpu.get("qemu_src", 0) > 0:
            problems.append(f"{tag}: no CPU charged to the source QEMU ({cpu})")
        if any(v < 0 for v in cpu.values()):
            problems.append(f"{tag}: negative CPU seconds ({cpu})")
        vcpu, mig = r.get("cpu_vcpu_s") or {}, r.get("cpu_migration_s")
        # A quiet guest may run less than a clock tick during a short
        # migration: present and not negative is what can be asked.
        if set(vcpu) != {"qemu_src", "qemu_dst"} or any(v < 0 for v in vcpu.values()):
            problems.append(f"{tag}: vCPU time of both QEMUs not measured ({vcpu}): debug-threads off?")
        elif not (mig is not None and 0 < mig <= r["cpu_total_s"]):
            problems.append(f"{tag}: CPU without the guests {mig} s, outside (0, {r['cpu_total_s']}] s")
        elif any(vcpu[q] > cpu.get(q, 0) for q in vcpu):
            problems.append(f"{tag}: vCPU seconds {vcpu} beyond the processes' {cpu}")
    return problems
