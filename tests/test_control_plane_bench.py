"""The control-plane load generator: its report lists, and a tiny run to completion.

Not timed: the smoke test checks that N simulated peers register with a real seeder process, get
Stage and Activate, have every report acked and stored, and that the rollout succeeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rollout_overhead import breakdown
from bench.simpeer import PREVIOUS_RELEASE_EVENTS, activate_steps, sim_address, stage_steps
from common.appspec import LIFECYCLE_EVENTS, parse_appspec
from common.messages import STAGE_STEPS

ALL_HOOKED = parse_appspec(
    "version: 0.0\nos: linux\nhooks:\n"
    + "".join(f"  {e}:\n    - location: hooks/{e}.sh\n" for e in LIFECYCLE_EVENTS)
)
NO_HOOKS = parse_appspec("version: 0.0\nos: linux\n")


def test_stage_reports_are_the_real_peers() -> None:
    steps = [(s.step, s.state) for s in stage_steps("app-v1")]
    assert steps[0] == ("stage", "running") and steps[-1] == ("stage", "succeeded")
    assert steps[1:-1] == [(n, st) for n in STAGE_STEPS for st in ("running", "succeeded")]


def test_activation_reports_follow_the_lifecycle() -> None:
    first = activate_steps(ALL_HOOKED, "app-v1", previous=None)
    names = [s.step for s in first]
    assert names[0] == names[-1] == "activate"
    assert names.index("Install") == names.index("BeforeInstall") + 2  # after its running+done
    # On a fresh host the previous release's events are skipped (one report each), every other
    # hooked event is reported running then succeeded, Install too.
    hooked = [e for e in LIFECYCLE_EVENTS if e not in PREVIOUS_RELEASE_EVENTS]
    assert len(first) == 2 + len(PREVIOUS_RELEASE_EVENTS) + 2 * len(hooked) + 2
    assert all(s.result == "skipped" for s in first if s.step in PREVIOUS_RELEASE_EVENTS), first
    again = activate_steps(ALL_HOOKED, "app-v2", previous=ALL_HOOKED)
    assert len(again) == len(first) + len(PREVIOUS_RELEASE_EVENTS)
    bare = activate_steps(NO_HOOKS, "app-v1", previous=None)
    assert len(bare) == 1 + len(LIFECYCLE_EVENTS) + 2 + 1


def test_today_a_fresh_host_sends_27_reports_when_every_event_has_a_hook() -> None:
    # Staging: stage running, each stage step running then succeeded, stage succeeded.
    stage = 2 + 2 * len(STAGE_STEPS)
    # Activation: activate running, one "skipped" report per event of the previous release (a
    # fresh host has none), running then succeeded for every other hooked event and for
    # Install, activate succeeded.
    hooked = [e for e in LIFECYCLE_EVENTS if e not in PREVIOUS_RELEASE_EVENTS]
    activate = 2 + len(PREVIOUS_RELEASE_EVENTS) + 2 * (len(hooked) + 1)
    total = stage_steps("a-1") + activate_steps(ALL_HOOKED, "a-1", previous=None)
    assert len(total) == stage + activate
    # 21 with the five events of the issue; the four traffic hooks add 2 skipped + 2 x 2 run.
    assert (len(LIFECYCLE_EVENTS), len(PREVIOUS_RELEASE_EVENTS)) == (9, 3)
    assert (stage, activate) == (8, 19) and len(total) == 27


def test_sim_addresses_are_distinct_loopback() -> None:
    addrs = [sim_address(i) for i in range(5000)]
    assert len(set(addrs)) == 5000
    assert all(a.startswith("127.") and not a.endswith(".0") for a in addrs)
    with pytest.raises(ValueError):
        sim_address(-1)


def test_overhead_breakdown_splits_the_critical_path() -> None:
    def steps(marks: list[tuple[str, float]], took: float) -> list[dict[str, object]]:
        detail = {"download": f"5000000 bytes in {took:.2f}s, 3 peer(s) connected at the end"}
        return [
            {"step": n, "state": "succeeded", "at": at, "detail": detail.get(n, "")}
            for n, at in marks
        ]

    fast = steps([("download", 101.0), ("verify", 101.05), ("unpack", 101.1), ("stage", 101.1),
                  ("ApplicationStart", 102.5), ("activate", 103.0)], took=0.7)  # fmt: skip
    slow = steps([("download", 102.3), ("verify", 102.5), ("unpack", 102.6), ("stage", 102.6),
                  ("ApplicationStop", 102.95), ("BeforeInstall", 103.0), ("Install", 103.1),
                  ("ApplicationStart", 104.2), ("activate", 104.5)], took=1.9)  # fmt: skip
    status = {
        "created_at": 100.0,
        "targets": [{"host": "a", "steps": fast}, {"host": "b", "steps": slow}],
    }
    starts = {"a": {"ApplicationStart": 102.0}, "b": {"ApplicationStart": 103.2, "Other": 1.0}}
    b = breakdown(status, starts)
    assert b["last_staged_host"] == b["last_activated_host"] == "b"
    assert b["total_s"] == pytest.approx(4.5)
    assert b["transfer_s"] == pytest.approx(1.9)
    assert b["stage_local_s"] == pytest.approx(0.3)  # verify + unpack after the download
    assert b["staging_control_s"] == pytest.approx(2.6 - 1.9 - 0.3)
    assert b["hooks_s"] == pytest.approx(1.0)  # only hooks whose step is in the status
    assert b["install_s"] == pytest.approx(0.1)
    assert b["activation_control_s"] == pytest.approx(1.9 - 1.0 - 0.1)
    assert b["overhead_s"] == pytest.approx(4.5 - 1.9 - 1.0)
    assert b["until_first_hook_s"] == pytest.approx(103.2 - 102.6)
    assert b["first_download_done_s"] == pytest.approx(1.0)


@pytest.mark.integration
def test_load_generator_runs_a_small_rollout_to_completion(tmp_path: Path) -> None:
    out = tmp_path / "cp.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.control_plane", "--hosts", "20", "--poll", "0,0.25",
         "--idle-seconds", "1", "--timeout", "120", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())
    assert [(r["hosts"], r["poll_s"]) for r in rows] == [(20, 0.0), (20, 0.25)]
    script = stage_steps("x") + activate_steps(ALL_HOOKED, "x", previous=None)
    expected = len(script)
    distinct = len({s.step for s in script})  # the seeder keeps each step's final report
    for row in rows:
        assert row["result"] == "ok" and row["state"] == "succeeded", row
        assert row["reports_per_peer"] == expected
        assert row["received_stage"] == row["received_activate"] == row["finished_hosts"] == 20
        assert row["reports_acked"] == 20 * expected and row["unacked"] == 0
        assert row["seeder_steps_per_host"] == [distinct]
        assert row["stage_fanout_s"]["p50"] <= row["stage_fanout_s"]["p99"] <= row["rollout_s"]
    assert rows[1]["polls"] >= 1 and rows[0]["polls"] == 0
    assert run.stdout.strip().splitlines()[-1].startswith("| 20 | 0.25 |")
