"""Makes the e2e test harness (tests/e2e/mmtest: Fabric, Vm, flow) importable:
the runner drives the same VMs and daemons the e2e tests do."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
E2E = REPO / "tests" / "e2e"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))
