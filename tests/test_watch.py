"""The watch view model: a rollout snapshot plus pushed events → plain lines, counts, views."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from common import messages as m
from peer.progress import Meter
from seeder.liveview import view
from seeder.watch import WatchModel, human_bytes, transfer_text


def snapshot(**extra: Any) -> dict[str, Any]:
    targets = [
        {"host": h, "state": "pending", "step": "", "error": "", "output": []}
        for h in ("web-1", "web-2", "web-3")
    ]
    rollout = {
        "rollout_id": "r1",
        "release_id": "app-v2",
        "state": "staging",
        "error": "",
        "created_at": 100.0,
        "updated_at": 100.0,
        "targets": targets,
        **extra,
    }
    return {"rollout": rollout, "progress": {}}


def ev(kind: str, seq: int = 0, at: float = 101.0, **data: Any) -> m.RolloutEvent:
    return m.RolloutEvent(rollout_id="r1", seq=seq, at=at, kind=kind, data=data)


def test_target_and_step_events_append_one_line_per_change() -> None:
    w = WatchModel(snapshot())
    assert w.counts() == {"pending": 3}
    assert w.apply(ev("target", 1, host="web-1", state="staging", step="")) == [
        "  web-1                staging     "
    ]
    assert w.apply(ev("step", 2, host="web-1", step="download", attempt=1, state="running")) == [
        "  web-1                staging     download"
    ]
    # The same (state, step) again (e.g. the target event that follows the step) adds nothing.
    assert w.apply(ev("target", 3, host="web-1", state="staging", step="download")) == []
    assert w.counts() == {"pending": 2, "staging": 1}


def test_events_already_in_the_snapshot_are_skipped_by_seq() -> None:
    w = WatchModel(snapshot(timeline=[{"seq": 5, "at": 100.0, "kind": "rollout"}]))
    assert w.apply(ev("target", 4, host="web-1", state="failed")) == []
    assert w.targets["web-1"].state == "pending"
    assert w.apply(ev("target", 6, host="web-1", state="staging")) != []
    assert w.last_seq == 6


def test_a_failed_hook_shows_its_exit_code_reason_and_last_output() -> None:
    w = WatchModel(snapshot(state="activating"))
    lines = w.apply(
        ev(
            "step",
            1,
            host="web-2",
            step="ValidateService",
            state="failed",
            result="failed",
            detail="exited with 3",
            exit_code=3,
            output=[f"line {i}" for i in range(15)],
        )
    )
    assert lines[-1] == "  web-2 ValidateService failed (exit 3): exited with 3"
    w.apply(ev("target", 2, host="web-2", state="failed", step="ValidateService", error="boom"))
    w.apply(ev("rollout", 3, state="failed", error="activation failed on 1 host(s): web-2"))
    ((failed, tail),) = w.failures()
    assert failed.host == "web-2" and tail == [f"line {i}" for i in range(5, 15)]
    report = w.report()
    assert "activation failed on 1 host(s): web-2" in report
    assert "--- last output of web-2 (ValidateService) ---\nline 5\n" in report
    assert not w.succeeded
    assert w.summary(2.0) == "rollout r1 failed: 1 failed, 2 pending in 2.0s"


def test_a_snapshot_names_the_failed_hook_not_the_activate_step_around_it() -> None:
    steps = [  # in the order the seeder keeps them: activate's record from its "running"
        {"step": "activate", "attempt": 1, "state": "failed", "at": 9.0},
        {"step": "ApplicationStop", "attempt": 1, "state": "succeeded", "at": 5.0},
        {"step": "ApplicationStart", "attempt": 1, "state": "failed", "at": 8.0},
    ]
    target = {"host": "web-2", "state": "failed", "steps": steps, "output": ["told to fail"]}
    w = WatchModel({"rollout": {"rollout_id": "r", "state": "halted", "targets": [target]}})
    assert w.targets["web-2"].failed_step == "ApplicationStart"
    assert "--- last output of web-2 (ApplicationStart) ---\ntold to fail" in w.report()
    alone = {**target, "steps": steps[:1], "output": []}  # activate failed by itself
    w = WatchModel({"rollout": {"rollout_id": "r", "state": "halted", "targets": [alone]}})
    assert w.targets["web-2"].failed_step == "activate"


def test_rollout_state_lines_and_success() -> None:
    w = WatchModel(snapshot())
    assert w.apply(ev("rollout", 1, state="activating", error="")) == ["rollout r1 activating"]
    assert w.apply(ev("rollout", 2, state="activating", error="")) == []
    w.apply(ev("rollout", 3, state="succeeded", error=""))
    assert w.succeeded
    assert w.apply(ev("mystery", 4, anything=1)) == []  # unknown kinds are ignored


def test_waves_count_their_own_targets() -> None:
    w = WatchModel(
        snapshot(
            waves=[
                {"index": 1, "hosts": ["web-1"], "state": "done"},
                {"index": 2, "hosts": ["web-2", "web-3"], "state": "pending"},
            ]
        )
    )
    w.apply(ev("target", 1, host="web-1", state="succeeded", step="activate", wave=1))
    assert w.apply(ev("wave", 2, wave=2, state="activating", hosts=["web-2", "web-3"])) == [
        "wave 2 activating: 2 host(s)"
    ]
    w.apply(ev("target", 3, host="web-2", state="activating", step="BeforeInstall", wave=2))
    assert w.wave_counts() == [
        ("1", "done", {"succeeded": 1}),
        ("2", "activating", {"activating": 1, "pending": 1}),
    ]
    assert "gate after wave 1 failed (exit 2)" in w.apply(
        ev("gate", 4, wave=1, exit_code=2, output=["no"])
    )


def test_no_waves_is_one_row_of_everything() -> None:
    assert WatchModel(snapshot()).wave_counts() == [("all", "staging", {"pending": 3})]


def test_transfer_sums_hosts_and_prints_a_line_per_ten_percent() -> None:
    w = WatchModel(snapshot())
    printed = []
    for i, (h, done) in enumerate([("web-1", 50), ("web-2", 100), ("web-1", 60), ("web-1", 200)]):
        printed += w.apply(ev("progress", 0, at=101.0 + i, host=h, done=done, total=200, rate=50.0))
    tr = w.transfer()
    assert (tr.done, tr.total, tr.hosts) == (300, 400, 2)
    assert tr.rate == 50.0  # web-1 is done: only web-2's rate counts
    assert tr.eta == 2.0
    assert printed == [
        "  transfer 25% (50 B of 200 B) at 50 B/s, ETA 3s",
        "  transfer 38% (150 B of 400 B) at 100 B/s, ETA 2s",
        "  transfer 40% (160 B of 400 B) at 100 B/s, ETA 2s",
        "  transfer 75% (300 B of 400 B) at 50 B/s, ETA 2s",
    ]


def test_transfer_text_without_rate_has_no_eta() -> None:
    w = WatchModel({**snapshot(), "progress": {"web-1": {"done": 0, "total": 10**9, "rate": 0}}})
    assert transfer_text(w.transfer()) == "0% (0 B of 1.0 GB) at 0 B/s, ETA -"
    assert human_bytes(1_500_000) == "1.5 MB"


def test_live_view_draws_bar_counts_and_failures() -> None:
    w = WatchModel(snapshot())
    w.apply(ev("progress", host="web-1", done=5_000_000, total=10_000_000, rate=1_000_000.0))
    w.apply(ev("target", 1, host="web-3", state="failed", step="download", error="disk full"))
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(view(w))
    text = console.export_text()
    assert "rollout r1" in text and "staging" in text
    assert "transfer 50% (5.0 MB of 10.0 MB) at 1.0 MB/s, ETA 5s" in text
    assert "FAILED" in text and "PENDING" in text
    assert "web-3 failed" in text and "disk full" in text


def test_progress_meter_throttles_and_always_sends_first_and_last() -> None:
    meter = Meter(1000, interval=0.5)
    first = meter.update(0.0, now=10.0)
    assert first is not None and (first.done, first.total) == (0, 1000)
    assert meter.update(0.1, now=10.2) is None  # too soon
    mid = meter.update(0.5, now=11.0)
    assert mid is not None and mid.done == 500
    assert mid.rate == 250.0  # half of (500 bytes in 1 s): smoothed with the initial 0
    last = meter.update(1.0, now=11.1)  # the end is never held back
    assert last is not None and (last.done, last.rate) == (1000, 0.0)
    assert meter.update(1.0, now=12.0) is None  # and sent once


def test_many_failures_are_capped_in_the_report_and_the_view() -> None:
    targets = [
        {"host": f"h{i:02}", "state": "failed", "output": [f"out {i}"], "steps": []}
        for i in range(30)
    ]
    w = WatchModel({"rollout": {"rollout_id": "r", "state": "failed", "targets": targets}})
    report = w.report()
    assert report.count("--- last output of") == 20
    assert report.endswith("... and 10 more failed host(s) with output: shoal logs HOST")
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(view(w))
    assert "... and 26 more failed host(s)" in console.export_text()


def test_a_resubscribed_log_prints_only_lines_not_printed_yet() -> None:
    from collections import Counter

    from seeder.follow import _print_new, line_text

    out = io.StringIO()
    printed: Counter[tuple[str, str, str]] = Counter()
    first = [{"rollout_id": "r", "step": "Start", "line": x, "at": 1.0} for x in ("a", ".", ".")]
    _print_new(first, line_text, out, printed)
    # After a seeder restart the same lines come back (other timestamps), plus new ones.
    again = [{**d, "at": 9.0} for d in first] + [
        {"rollout_id": "r", "step": "Start", "line": x, "at": 9.0} for x in (".", "b")
    ]
    _print_new(again, line_text, out, printed)
    assert out.getvalue().splitlines() == [
        "[Start] a",
        "[Start] .",
        "[Start] .",
        "[Start] .",
        "[Start] b",
    ]


def test_hosts_yet_to_report_count_the_release_size_in_the_total() -> None:
    w = WatchModel({**snapshot(), "release": {"size": 100}})
    assert (w.transfer().done, w.transfer().total) == (0, 300)
    w.apply(ev("progress", host="web-1", done=100, total=100, rate=0.0))
    w.apply(ev("target", 1, host="web-2", state="staged", step="stage"))  # had it already
    assert (w.transfer().done, w.transfer().total) == (100, 200)


def test_a_resync_prints_only_what_changed_meanwhile() -> None:
    from seeder.follow import _changes

    old = WatchModel(snapshot())
    later = snapshot(state="activating")
    later["rollout"]["targets"][1] = {"host": "web-2", "state": "staged", "step": "stage"}
    assert _changes(old, WatchModel(later)) == [
        "rollout r1 activating",
        "  web-2                staged      stage",
    ]
    assert len(_changes(None, WatchModel(later))) == 4  # a first subscription: everything
