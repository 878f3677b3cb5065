"""A small run of the swarm benchmark in real namespaces: every host stages, figures add up.

Not a timed test: it checks that the benchmark works end to end (testbed, shoal's seeder and
peers driven through their commands, the SFTP baseline, JSON and plot), not how fast.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.netns import netns_available
from bench.sftp import sshd_available

pytestmark = [pytest.mark.netns, pytest.mark.integration]


def test_swarm_benchmark_smoke(tmp_path: Path) -> None:
    if reason := netns_available():
        pytest.skip(reason)
    baseline = "sftp" if sshd_available() is None else "none"
    out_json = tmp_path / "smoke.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.swarm",
            "--hosts",
            "4",
            "--rate-mbit",
            "40",
            "--size-mb",
            "3",
            "--baseline",
            baseline,
            "--out",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"ratio_to_bound=([\d.]+) egress_over_size=([\d.]+) speedup_vs_sftp=(\S+)", last
    )
    assert match, last
    result = json.loads(out_json.read_text())
    assert sorted(result["hosts"]) == ["h1", "h2", "h3", "h4"]
    size = result["size_bytes"]
    assert size > 3_000_000  # the release archive of 3 MB of random bytes
    for host in result["hosts"].values():
        assert host["staged_s"] > 0
        assert host["steps_s"]["download"] <= host["staged_s"]
    summary = result["summary"]
    times = sorted(h["staged_s"] for h in result["hosts"].values())
    assert summary["max_s"] == times[-1]
    # T* for 4 hosts at 40 Mbit/s everywhere is F / 40 Mbit/s.
    assert summary["t_star_s"] == pytest.approx(size * 8 / 40e6)
    assert float(match[1]) == pytest.approx(summary["max_s"] / summary["t_star_s"], abs=1e-3)
    assert float(match[2]) == pytest.approx(result["seeder_payload_bytes"] / size, abs=1e-3)
    assert result["seeder_payload_bytes"] >= size  # every byte left the seeder at least once
    assert summary["cpu_s_per_gb"] > 0
    if baseline == "sftp":
        assert sorted(result["sftp"]["hosts"]) == ["h1", "h2", "h3", "h4"]
        assert float(match[3]) == pytest.approx(result["sftp"]["max"] / summary["max_s"], abs=1e-2)
    assert out_json.with_suffix(".png").stat().st_size > 1000
