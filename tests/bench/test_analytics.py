"""bench/analytics.py still runs through the product's own paths (ingest's rows, the ledger, every report)
on a small history: a change to what those paths take breaks it here, not in the next session's bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blipflow.analytics.reports import reports

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.process
def test_the_analytics_bench_times_every_report_on_a_small_history() -> None:
    ran = subprocess.run([sys.executable, "bench/analytics.py", "--blips", "3000", "--agents", "5", "--people", "40",
                          "--days", "2", "--repeat", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    figures = json.loads(ran.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "analytics" and figures["blips"] >= 3000
    assert set(figures["reports"]) == set(reports()) and all(ms > 0 for ms in figures["reports"].values())
