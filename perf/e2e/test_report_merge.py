#!/usr/bin/python3
"""Merging runs of the suite into one report (compare_migrations.py --merge):
matrix order, repeats renumbered, medians over all parts, parts that are not
one matrix refused. The inputs are results.json files written by the
suite's own writer; the suite itself runs for real in perf_e2e_smoke."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mmperf import report  # noqa: E402


def run(size: int, workload: str, cap: str, mode: str, total_ms: float, ok: bool = True) -> dict:
    fam = "mm" if mode.startswith("mm-") else "qemu"
    return {"scenario": f"{size}MiB/{workload}/{cap}", "size_mib": size, "workload_mib": size * 3 // 4,
            "workload": workload, "cap": cap, "cap_bytes_per_s": 0, "mode": mode, "family": fam, "repeat": 1,
            "ok": ok, "error": None if ok else "boom", "qemu_transport": "tcp", "total_ms": total_ms,
            "setup_ms": 10.0, "downtime_ms": 50.0, "dst_downtime_ms": 60.0, "qemu_bytes": 2**28,
            "wire_bytes": 2**27, "pages_per_s": 1e5, "cpu_total_s": 2.0,
            "cpu_s": {"qemu_src": 1.0, "qemu_dst": 0.5, "daemon_src": 0.3, "daemon_dst": 0.2},
            "pages_applied": fam == "mm" or None, "started_at": "2026-11-25T06:00:00"}


def part(folder: Path, runs: list[dict], profile: str = "af_packet-veth", transport: str = "tcp",
         started: str = "2026-11-25T06:00:00") -> Path:
    folder.mkdir(parents=True)
    meta = {"command": f"perf/e2e/compare_migrations.py --out {folder}", "started": started,
            "finished": started, "repeats": 1, "qemu_transport": transport,
            "environment": {"profile": profile, "git": folder.name, "build": f"/b/{folder.name}"}}
    report.write_json(folder, meta, runs)
    return folder


class MergeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_matrix_order_repeats_and_medians(self):
        p1 = part(self.dir / "p1", [run(2048, "idle", "1G", "mm-lz4", 900), run(512, "heavy", "unlimited", "mm-lz4", 100),
                                    run(512, "idle", "1G", "qemu-direct", 300)])
        p2 = part(self.dir / "p2", [run(512, "heavy", "unlimited", "mm-lz4", 300),
                                    run(512, "idle", "unlimited", "qemu-direct", 200)], started="2026-11-25T05:00:00")
        p3 = part(self.dir / "p3", [run(512, "heavy", "unlimited", "mm-lz4", 200)])
        meta, runs = report.merge([p1, p2, p3])
        self.assertEqual([r["scenario"] for r in runs],
                         ["512MiB/idle/unlimited", "512MiB/idle/1G", "512MiB/heavy/unlimited",
                          "512MiB/heavy/unlimited", "512MiB/heavy/unlimited", "2048MiB/idle/1G"])
        heavy = [r for r in runs if r["scenario"] == "512MiB/heavy/unlimited"]
        self.assertEqual([r["repeat"] for r in heavy], [1, 2, 3])
        self.assertEqual([r["part"] for r in heavy], ["p1", "p2", "p3"])
        med = {(r["scenario"], r["mode"]): r for r in report.medians(runs)}
        self.assertEqual(med[("512MiB/heavy/unlimited", "mm-lz4")]["total_ms"], 200)
        self.assertEqual(med[("512MiB/heavy/unlimited", "mm-lz4")]["runs"], 3)
        self.assertEqual(meta["started"], "2026-11-25T05:00:00")
        self.assertIn("1-3", meta["repeats"])
        for name in ("p1", "p2", "p3"):
            self.assertIn(f"[{name}]", meta["command"])
            self.assertIn(f"/b/{name}", meta["environment"]["build"])

    def test_refuses_parts_that_are_not_one_matrix(self):
        a = part(self.dir / "a", [run(512, "idle", "1G", "mm-lz4", 1)])
        b = part(self.dir / "b", [run(512, "idle", "1G", "mm-lz4", 1)], profile="memif")
        c = part(self.dir / "c", [run(512, "idle", "1G", "mm-lz4", 1)], transport="unix")
        with self.assertRaisesRegex(ValueError, "NIC profiles"):
            report.merge([a, b])
        with self.assertRaisesRegex(ValueError, "qemu_transport"):
            report.merge([a, c])
        with self.assertRaisesRegex(ValueError, "cannot read"):
            report.merge([a, self.dir / "missing"])
        with self.assertRaisesRegex(ValueError, "no result folders"):
            report.merge([])

    def test_command_line_writes_one_report(self):
        p1 = part(self.dir / "p1", [run(512, "idle", "1G", "mm-lz4", 100), run(512, "idle", "1G", "qemu-direct", 200)])
        p2 = part(self.dir / "p2", [run(512, "idle", "1G", "mm-lz4", 300), run(512, "idle", "1G", "qemu-direct", 400)])
        out = self.dir / "merged"
        r = subprocess.run([sys.executable, str(HERE / "compare_migrations.py"), "--merge", str(p1), str(p2),
                            "--out", str(out)], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("4 runs from 2 parts", r.stdout)
        md = (out / "report.md").read_text()
        self.assertIn("4 runs, 4 verified", md)
        self.assertIn("[p1]", md)
        self.assertIn("[p2]", md)
        # medians over both parts: mm-lz4 200 ms, qemu-direct 300 ms
        self.assertIn("total time 0.67", (out / "summary.txt").read_text())
        self.assertIn("| 512MiB/idle/1G | **0.67** | mm-lz4 0.20 s / qemu-direct 0.30 s |", md)
        self.assertEqual(len(json.loads((out / "results.json").read_text())["runs"]), 4)
        bad = subprocess.run([sys.executable, str(HERE / "compare_migrations.py"), "--merge", str(p1)],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("--merge needs --out", bad.stderr)


if __name__ == "__main__":
    unittest.main()
