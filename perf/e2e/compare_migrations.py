#!/usr/bin/python3
"""Migrates the same real QEMU VM (TCG, the busybox test guest running
memload) under QEMU's own migration modes and through two memmotiond, and
reports side by side what MemoryMotion buys: total time, downtime at the
destination, bytes on the wire, CPU seconds of every process, pages/s;
guest RAM checked byte-identical after every run.

Modes: qemu-direct, qemu-multifd4, qemu-multifd4-zstd (QEMU to QEMU over
TCP on a veth of their own, or a unix socket) and mm-none, mm-lz4, mm-zstd, mm-deflate (QEMU multifd 4 into
the source daemon, MemoryMotion page policy with that codec; mm-relay: no
page policy, not in the default set). Full matrix: sizes 512,2048 x
workloads idle,typical,heavy,rewrite-identical x caps unlimited,10G,1G x 7
modes x 3 repeats -- many hours on a small machine; select subsets:

  compare_migrations.py --sizes 512 --workloads typical --caps unlimited,1G \\
      --modes qemu-multifd4,mm-lz4 --repeats 1

--smoke: one 160 MiB VM (64 MiB workload), typical, unlimited,
qemu-multifd4 and mm-lz4, one repeat; checks the report and that the
figures are sane (exit 1 if not; mm-lz4 must run its page policy). Writes results.json, runs.csv,
medians.csv, report.md, summary.txt and PNG plots to --out."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmperf import harness, matrix, plots, report, smoke  # noqa: E402
from mmperf.runner import MigrationRunner, loud  # noqa: E402

from mmtest.guest import ensure_guest  # noqa: E402


def csv_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_sizes(s: str) -> list[matrix.Size]:
    """'512,2048' or 'RAM:WORKLOAD' items, MiB."""
    out = []
    for item in csv_list(s):
        ram, _, wl = item.partition(":")
        out.append(matrix.size(int(ram), int(wl) if wl else None))
    return out


def selection(a: argparse.Namespace) -> matrix.Selection:
    if a.smoke:
        return matrix.Selection([matrix.size(160, 64)], [matrix.WORKLOADS["typical"]], ["unlimited"],
                                matrix.pick(["qemu-multifd4", "mm-lz4"], matrix.MODES, "mode"), 1)
    caps = csv_list(a.caps)
    matrix.pick(caps, matrix.CAPS, "cap")
    pp = [float(t) for t in csv_list(a.ping_pong)] if a.ping_pong else None
    if pp and any(t < 0 for t in pp):
        raise SystemExit("--ping-pong: seconds must be >= 0")
    return matrix.Selection(parse_sizes(a.sizes), matrix.pick(csv_list(a.workloads), matrix.WORKLOADS, "workload"),
                            caps, matrix.pick(csv_list(a.modes), matrix.MODES, "mode"), a.repeats, pp)


def summary_line(r: dict) -> str:
    if not r["ok"]:
        return f"FAILED: {r['error']}"
    def mib(v) -> str:
        return "?" if v is None else f"{v / 2**20:.1f} MiB"
    return (f"total {r['total_ms'] / 1000:.2f} s, downtime at dst {r['dst_downtime_ms']:.0f} ms "
            f"(QEMU {r['downtime_ms']:.0f} ms), wire {mib(r['wire_bytes'])} (link counter "
            f"{mib(r.get('link_tx_bytes'))}, QEMU's count {mib(r['qemu_bytes'])}), "
            f"{r['pages_per_s'] / 1000:.0f} k pages/s, "
            f"CPU s " + " ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"].items())
            + ("" if r.get("cpu_daemon_src_s_per_gib") is None else
               f", daemon CPU s/GiB src {r['cpu_daemon_src_s_per_gib']:.2f} "
               f"dst {report.fmt('x_s', r.get('cpu_daemon_dst_s_per_gib'))}")
            + ("" if r.get("pages_applied") is not False else "  [PLAIN RELAY: pages refused]"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=harness.REPO / "build")
    ap.add_argument("--out", type=Path, help="output folder (default perf/results/<date-time>)")
    ap.add_argument("--sizes", default=",".join(map(str, matrix.DEFAULT_SIZES)),
                    help="guest RAM in MiB, comma-separated; RAM:WORKLOAD sets memload's share "
                         "(default three quarters)")
    ap.add_argument("--workloads", default=",".join(matrix.DEFAULT_WORKLOADS),
                    help=f"of {', '.join(matrix.WORKLOADS)}")
    ap.add_argument("--modes", default=",".join(matrix.DEFAULT_MODES), help=f"of {', '.join(matrix.MODES)}")
    ap.add_argument("--caps", default=",".join(matrix.DEFAULT_CAPS), help=f"of {', '.join(matrix.CAPS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", default="af_packet-veth",
                    help="NIC profile of both daemons: af_packet-veth (a veth, the kernel's AF_PACKET "
                         "work charged to the daemons), memif (shared memory between the two daemons, "
                         "no kernel network work), af_xdp-veth, ...; QEMU's own modes cross a veth "
                         "of their own whatever the profile")
    ap.add_argument("--timeout", type=float, help="seconds a migration may take (default from size)")
    ap.add_argument("--qemu-transport", choices=["tcp", "unix"], default="tcp",
                    help="QEMU's own modes: TCP over a veth of their own between the two hosts, "
                         "counted by the kernel (default), or a unix socket (no wire bytes for "
                         "multifd-compression: QEMU 7.2 counts multifd bytes before compressing)")
    ap.add_argument("--mm-encrypt", choices=["required", "off"],
                    help="MemoryMotion modes negotiate their sessions over the daemons' peer channel "
                         "with this --encrypt (required: AES-256-GCM on the fabric); default: sessions "
                         "set up directly, without a key (veth profiles only)")
    ap.add_argument("--ping-pong", metavar="T[,T...]",
                    help="ping-pong scenarios (issue 12): A -> B, the guest runs T s on B, B -> A; the "
                         "way back is measured (its first hop under 'first'). The mm modes name the VM, "
                         "so A's daemon keeps its image; needs --mm-encrypt (the peer channel)")
    ap.add_argument("--allow-relay-fallback", action="store_true",
                    help="if memmotiond refuses the page policy, run mm modes as a plain relay "
                         "(flagged everywhere) instead of failing them (--smoke does this)")
    ap.add_argument("--list", action="store_true", help="print the selected runs and exit")
    ap.add_argument("--report-only", type=Path, metavar="DIR",
                    help="rebuild the reports in DIR from its results.json")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                    help="one report in --out from the results.json of several runs of the suite "
                         "(a long matrix run in pieces); repeats are renumbered")
    ap.add_argument("--smoke", action="store_true", help=__doc__.split("--smoke: ")[1].split("\n\n")[0])
    a = ap.parse_args()

    if a.report_only:
        import json
        data = json.loads((a.report_only / "results.json").read_text())
        files = report.write_all(a.report_only, data["meta"], data["runs"])
        print("\n".join(report.ratio_lines(report.medians(data["runs"]))))
        print(f"perf: report in {files['md'][0]}")
        return 0

    if a.merge:
        if not a.out:
            ap.error("--merge needs --out")
        try:
            meta, runs = report.merge(a.merge)
        except ValueError as e:
            print(f"perf: {e}", file=sys.stderr)
            return 2
        files = report.write_all(a.out, meta, runs)
        print("\n".join(report.ratio_lines(report.medians(runs))))
        print(f"perf: {len(runs)} runs from {len(a.merge)} parts, report in {files['md'][0]}")
        return 0

    sel = selection(a)
    if a.ping_pong and not a.mm_encrypt and any(m.via_daemons for m in sel.modes):
        raise SystemExit("--ping-pong with mm modes needs --mm-encrypt off|required: the destination's "
                         "image is offered over the peer channel")
    if a.list:
        for sc in sel.scenarios:
            print(f"{sc.key}: {', '.join(m.name for m in sel.modes)} x {sel.repeats}")
        print(f"{sel.runs()} runs")
        return 0

    started = datetime.datetime.now()
    out = a.out or (a.build / "perf" / "e2e" / "smoke" if a.smoke else
                    harness.REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": shlex.join(["perf/e2e/compare_migrations.py", *sys.argv[1:]]),
            "started": started.isoformat(timespec="seconds"), "repeats": sel.repeats,
            "environment": report.environment(a.profile, a.build), "smoke": a.smoke,
            "qemu_transport": a.qemu_transport,
            "selection": {"sizes": [s.__dict__ for s in sel.sizes], "workloads": [w.name for w in sel.workloads],
                          "caps": sel.caps, "modes": [m.name for m in sel.modes]}}
    kernel, initrd = ensure_guest(a.build)
    runner = MigrationRunner(a.build, kernel, initrd, a.profile, a.timeout,
                             allow_relay_fallback=a.allow_relay_fallback,
                             qemu_transport=a.qemu_transport, mm_encrypt=a.mm_encrypt)
    records: list[dict] = []
    total, i = sel.runs(), 0
    print(f"perf: {total} runs into {out}", flush=True)
    try:
        runner.open()
        meta["qemu_transport"] = runner.qemu_transport
        for sc in sel.scenarios:
            for rep in range(1, sel.repeats + 1):
                for mode in sel.modes:  # modes interleaved within a repeat: drift hits all alike
                    i += 1
                    print(f"perf: [{i}/{total}] {sc.key} {mode.name} #{rep} ...", flush=True)
                    rec = runner.run(sc, mode, rep)
                    records.append(rec)
                    print(f"perf:   {summary_line(rec)}", flush=True)
                    meta["pages_rejected"] = runner.pages_rejected
                    report.write_json(out, meta, records)
    except KeyboardInterrupt:
        print("perf: interrupted; reporting the runs done", flush=True)
    finally:
        runner.close()
    meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    meta["pages_rejected"] = runner.pages_rejected
    files = report.write_all(out, meta, records)

    print("\nperf: MemoryMotion best mode / QEMU best mode, per scenario:")
    for line in report.ratio_lines(report.medians(records)):
        print(f"  {line}")
    print(f"perf: report {files['md'][0]}")
    if runner.pages_rejected:
        loud(f"memmotiond refused the page policy ({runner.pages_rejected}): mm modes ran as a "
             "PLAIN RELAY where --allow-relay-fallback/--smoke allowed it, failed otherwise")
    if a.smoke:
        problems = smoke.check(out, records, files, want_plots=True)
        if not plots.available():
            problems.append("gnuplot is missing (apt-get install gnuplot-nox; scripts/mm setup does it)")
        if problems:
            print("FAIL:\n  " + "\n  ".join(problems))
            return 1
        print("PASS")
    return 0 if all(r["ok"] for r in records) and records else 1


if __name__ == "__main__":
    sys.exit(main())
