"""A small run of the enrollment benchmark: it enrolls for real and its figures add up (not a
timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_enroll_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "enroll.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.enroll", "--hosts", "3", "--runs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "per-host median (shoal-peer join):" in run.stdout
    result = json.loads(out.read_text())
    (only,) = result["runs"]
    assert len(only["per_host_s"]) == len(only["exchange_s"]) == 3
    assert all(0 < t < only["wall_s"] for t in only["per_host_s"])
    assert result["summary"]["hosts"] == 3
