#!/usr/bin/env python3
"""make_report.py: the budgeted choice, the ideal packer and a whole report
from hand-made runs (no simulator needed)."""
import importlib.util
import json
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("make_report", os.path.join(HERE, "..", "make_report.py"))
mr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mr)


def run_row(group, det, param, tf, slav, util, slatah=0.04, day="20110303", **extra):
    row = {"group": group, "day": day, "detector": det, "selector": "mmt", "parameter": param,
           "time_factor": tf, "downtime_s": 0, "cpu_factor": 1, "slav": slav, "slatah": slatah,
           "pdm": slav / slatah, "mean_utilization": util, "p95_utilization": util + 0.1,
           "mean_active_hosts": 100, "energy_kwh": 200, "esv": 200 * slav, "migrations": 1000,
           "vms_not_placed": 0, "slatah_per_host": slatah, "pdm_per_vm": slav / slatah,
           "mean_migration_s": 14 * tf, "wall_s": 0.2, "process_s": 1.0}
    row.update(extra)
    return row


class CloudSimComparison(unittest.TestCase):
    def test_differences_and_a_reason_above_five_percent(self):
        with tempfile.TemporaryDirectory() as d:
            json.dump({"day": "20110303", "runs": [
                {"detector": "thr", "selector": "mmt", "parameter": 0.8, "energy_kwh": 200.0,
                 "migrations": 1000, "slatah": 0.05, "slav": 4e-5}]},
                open(os.path.join(d, "cloudsim-reference.json"), "w"))
            ours = [run_row("validation-cloudsim", "thr", 0.8, 1, 4.1e-5, 0.3, slatah=0.05,
                            energy_kwh=220.0, migrations=1020)]
            rows = {r[1]: r for r in mr.cloudsim_comparison(d, ours)}
            self.assertAlmostEqual(rows["energy_kwh"][4], 10.0)
            self.assertTrue(rows["energy_kwh"][5])  # above 5 %: a reason
            self.assertAlmostEqual(rows["migrations"][4], 2.0)
            self.assertEqual(rows["migrations"][5], "")
            self.assertAlmostEqual(rows["pdm"][2], 4e-5 / 0.05)  # derived from SLAV / SLATAH
            self.assertTrue(os.path.exists(os.path.join(d, "validation-cloudsim.csv")))
            # No reference file: no rows.
            os.remove(os.path.join(d, "cloudsim-reference.json"))
            self.assertEqual(mr.cloudsim_comparison(d, ours), [])


class BestUnderBudget(unittest.TestCase):
    def test_takes_the_most_utilized_parameter_within_budget(self):
        rows = [run_row("x", "thr", 0.8, 1, 2e-5, 0.30), run_row("x", "thr", 0.9, 1, 3e-5, 0.33),
                run_row("x", "thr", 1.0, 1, 9e-5, 0.35)]
        best = mr.best_under_budget(rows, 3e-5)
        self.assertEqual(best[0], 0.9)
        self.assertAlmostEqual(best[1], 0.33)
        self.assertIsNone(mr.best_under_budget(rows, 1e-5))
        # A SLATAH budget looks at SLATAH, not SLAV.
        rows[2]["slatah"] = 0.01
        self.assertEqual(mr.best_under_budget(rows, 0.02, metric="slatah")[0], 1.0)

    def test_medians_over_days(self):
        rows = [run_row("x", "lr", 1.2, 1, s, u, day=d)
                for s, u, d in [(1e-5, 0.3, "a"), (5e-5, 0.5, "b"), (2e-5, 0.4, "c")]]
        best = mr.best_under_budget(rows, 2e-5)
        self.assertAlmostEqual(best[1], 0.4)


class Oracle(unittest.TestCase):
    def test_packs_cpu_and_ram(self):
        with tempfile.TemporaryDirectory() as d:
            day = os.path.join(d, "day")
            os.makedirs(day)
            # Four VMs, one of each type, at 50 %: 1250 + 1000 + 500 + 250 MIPS.
            for i in range(4):
                with open(os.path.join(day, f"vm{i}"), "w") as f:
                    f.write("50\n" * 288)
            mr.oracle(d, d, day="day", every=144)
            o = json.load(open(os.path.join(d, "oracle.json")))
            # CPU only: all four fit one G5 host (3000 of 5320 MIPS).
            self.assertEqual(o["cap1.0_cpu"]["mean_hosts"], 1)
            self.assertAlmostEqual(o["cap1.0_cpu"]["mean_utilization"], 3000 / 5320)
            # RAM: 870 + 1740 + 1740 + 613 MB need two 4096 MB hosts.
            self.assertEqual(o["cap1.0_cpu_ram"]["mean_hosts"], 2)


class Report(unittest.TestCase):
    def test_report_from_hand_made_runs(self):
        with tempfile.TemporaryDirectory() as d:
            rows = []
            for tf, factor in [(1, 1.0), (0.1, 0.1)]:
                for p, u in [(0.8, 0.30), (1.0, 0.34)]:
                    rows.append(run_row("sweep-time", "thr", p, tf, 3e-5 * factor * (1 + p - 0.8), u))
            rows.append(run_row("validation", "thr", 0.8, 1, 3e-5, 0.30, active_hosts=[3, 2, 1]))
            with open(os.path.join(d, "runs.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            fit = {"modes": [{"mode": "mm-lz4", "runs": 63, **{q: {"coefficients": [0.1] * 5, "rmse": 0.5,
                                                                    "median_abs_pct": 8.0, "max_abs_pct": 50.0}
                                                              for q in ("total_s", "downtime_s", "cpu_s")}}]}
            json.dump(fit, open(os.path.join(d, "fit.json"), "w"))
            mr.report(d)
            text = open(os.path.join(d, "report.md")).read()
            self.assertIn("THR-MMT-0.8", text)
            curve = open(os.path.join(d, "curve.csv")).read().splitlines()
            # Baseline budget = SLAV of THR-0.8 at 1x: at 1x only 0.8 fits,
            # at 0.1x 1.0 does too and wins.
            self.assertTrue(any(line.startswith("thr,1,baseline") and ",0.8,0.3," in line for line in curve))
            self.assertTrue(any(line.startswith("thr,0.1,baseline") and ",1.0,0.34," in line for line in curve))


if __name__ == "__main__":
    unittest.main()
