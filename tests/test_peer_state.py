"""The peer's durable state: journal, on-disk layout, reconnect backoff and the report pump."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from peer.backoff import Backoff
from peer.journal import Journal, StepRecord
from peer.layout import Layout
from peer.reports import LIVE_BUFFER, Reporter


def report(
    step: str, state: str = "succeeded", *, rollout: str = "r1", attempt: int = 1
) -> m.StepReport:
    return m.StepReport(
        rollout_id=rollout, host="web-1", step=step, attempt=attempt, state=state, at=1.0
    )


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state.db")
    try:
        yield j
    finally:
        j.close()


# --- journal -------------------------------------------------------------------------------------


def test_record_assigns_increasing_seq_and_keeps_the_report(journal: Journal) -> None:
    stamped = [journal.record(report(s)) for s in ("download", "verify", "unpack")]
    seqs = [r.seq for r in stamped]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[0] > 0
    assert [r.step for r in stamped] == ["download", "verify", "unpack"]
    assert journal.unsent() == stamped


def test_unsent_after_is_ordered_and_limited(journal: Journal) -> None:
    stamped = [journal.record(report(f"s{i}")) for i in range(6)]
    assert journal.unsent(after=stamped[2].seq) == stamped[3:]
    assert journal.unsent(after=stamped[0].seq, limit=2) == stamped[1:3]
    assert journal.unsent(after=stamped[-1].seq) == []


def test_ack_removes_only_that_report(journal: Journal) -> None:
    a, b, c = (journal.record(report(s)) for s in ("download", "verify", "unpack"))
    journal.ack(b.seq)
    assert journal.unsent() == [a, c]
    journal.ack(b.seq)  # a repeated ack is harmless
    journal.ack(a.seq)
    journal.ack(c.seq)
    assert journal.unsent() == []
    # Acked reports leave the outbox, not the step history.
    assert journal.step("r1", "verify", 1) is not None


def test_step_lookup_keeps_the_latest_state_per_attempt(journal: Journal) -> None:
    journal.record(report("BeforeInstall", "running"))
    journal.record(report("BeforeInstall", "failed"))
    journal.record(report("BeforeInstall", "running", attempt=2))
    assert journal.step("r1", "BeforeInstall", 1) == StepRecord(
        "r1", "BeforeInstall", 1, "failed", "", ""
    )
    found = journal.step("r1", "BeforeInstall", 2)
    assert found is not None and found.state == "running"
    assert journal.step("r1", "BeforeInstall", 3) is None
    assert journal.step("r2", "BeforeInstall", 1) is None


def test_running_steps_lists_only_unfinished_ones(journal: Journal) -> None:
    journal.record(report("download", "running"))
    journal.record(report("download", "succeeded"))
    journal.record(report("ApplicationStart", "running"))
    journal.record(report("unpack", "running", rollout="r2"))
    running = sorted((s.rollout_id, s.step) for s in journal.running_steps())
    assert running == [("r1", "ApplicationStart"), ("r2", "unpack")]


def test_journal_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = Journal(path)
    kept = first.record(report("download"))
    acked = first.record(report("verify", "running"))
    first.ack(acked.seq)
    first.add_release({"release_id": "app-1-abcd", "app": "app"}, b"torrent", 5.0)
    first.close()

    again = Journal(path)
    try:
        assert again.unsent() == [kept]
        assert again.step("r1", "download", 1) is not None
        assert [s.step for s in again.running_steps()] == ["verify"]
        assert again.release("app-1-abcd") == (
            {"release_id": "app-1-abcd", "app": "app"},
            b"torrent",
        )
        # Sequence numbers keep growing across restarts: a new report never reuses an old seq.
        assert again.record(report("unpack")).seq > acked.seq
    finally:
        again.close()


def test_releases_add_list_remove(journal: Journal) -> None:
    assert journal.releases() == []
    assert journal.release("nope") is None
    journal.add_release({"release_id": "b", "v": 2}, b"tb", 20.0)
    journal.add_release({"release_id": "a", "v": 1}, b"ta", 10.0)
    assert [(mf["release_id"], t, at) for mf, t, at in journal.releases()] == [
        ("a", b"ta", 10.0),
        ("b", b"tb", 20.0),
    ]
    journal.add_release({"release_id": "a", "v": 3}, b"ta2", 30.0)  # re-staged: replaced
    assert journal.release("a") == ({"release_id": "a", "v": 3}, b"ta2")
    journal.remove_release("b")
    assert [mf["release_id"] for mf, _, _ in journal.releases()] == ["a"]
    assert journal.release("b") is None


# --- layout --------------------------------------------------------------------------------------


def make_releases(layout: Layout, ids: list[str]) -> None:
    for rid in ids:
        layout.release_dir(rid).mkdir(parents=True)
        (layout.release_dir(rid) / "VERSION").write_text(rid)
        layout.download_dir(rid).mkdir(parents=True)


def test_current_and_previous_are_none_when_absent(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    assert layout.current() is None
    assert layout.previous() is None
    layout.switch_current(None)  # removing what is not there is fine
    assert layout.current() is None


def test_switch_current_replaces_the_link_atomically(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    make_releases(layout, ["v1", "v2"])
    layout.switch_current("v1")
    assert layout.current() == "v1"
    assert os.readlink(layout.current_link) == os.path.join("releases", "v1")
    assert (layout.current_link / "VERSION").read_text() == "v1"
    # A tmp link left by a crash mid-switch does not get in the way.
    (layout.root / ".current.tmp").symlink_to("releases/garbage")
    layout.switch_current("v2")
    assert layout.current() == "v2"
    assert (layout.current_link / "VERSION").read_text() == "v2"
    assert layout.current_link.is_symlink()
    assert sorted(p.name for p in layout.root.iterdir()) == [
        "current",
        "downloads",
        "releases",
    ]
    layout.switch_previous("v1")
    assert (layout.current(), layout.previous()) == ("v2", "v1")
    layout.switch_current(None)
    assert layout.current() is None and layout.previous() == "v1"


def test_prune_keeps_the_newest_and_never_current_or_previous(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    order = [f"v{i}" for i in range(7)]  # oldest first
    make_releases(layout, order)
    layout.switch_current("v0")
    layout.switch_previous("v1")
    removed = layout.prune(order, keep=3)
    assert removed == ["v2", "v3"]
    left = sorted(p.name for p in layout.releases.iterdir())
    assert left == ["v0", "v1", "v4", "v5", "v6"]
    assert sorted(p.name for p in layout.downloads.iterdir()) == left
    assert layout.prune(order, keep=3) == []  # nothing more to do


def test_prune_ignores_releases_that_are_not_on_disk(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    make_releases(layout, ["v2", "v3"])
    assert layout.prune(["v0", "v1", "v2", "v3"], keep=2) == []
    assert layout.prune(["v0", "v1", "v2", "v3"], keep=1) == ["v2"]


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(initial=0.5, cap=8.0, factor=2.0, rng=random.Random(42))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[4:])) > 1  # jittered, not lockstep
    assert backoff.failures == len(ceilings)


def test_backoff_jitter_spans_the_upper_half() -> None:
    rng = random.Random(7)
    delays = [Backoff(initial=4.0, cap=4.0, rng=rng).next_delay() for _ in range(200)]
    assert min(delays) >= 2.0 and max(delays) <= 4.0
    assert min(delays) < 2.2 and max(delays) > 3.8


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert 0.5 <= backoff.next_delay() <= 1.0


# --- reporter pump -------------------------------------------------------------------------------


class Wire:
    """A fake connection: collects what the pump sends; fails when told to."""

    def __init__(self) -> None:
        self.sent: list[m.StepReport] = []

    async def send(self, msg: m.Message) -> None:
        assert isinstance(msg, m.StepReport)
        await trio.sleep(0.01)  # a slow link; the autojump clock makes it free
        self.sent.append(msg)


async def test_pump_sends_old_and_new_reports_in_order(
    journal: Journal, autojump_clock: trio.testing.MockClock
) -> None:
    reporter = Reporter(journal, "web-1", clock=lambda: 100.0)
    reporter.step("r1", "download", "running")
    reporter.step("r1", "download", "succeeded")
    wire = Wire()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reporter.pump, wire.send)
            await trio.sleep(1)
            assert [(r.step, r.state) for r in wire.sent] == [
                ("download", "running"),
                ("download", "succeeded"),
            ]
            reporter.step("r1", "verify", "succeeded")
            reporter.step("r1", "unpack", "failed", detail="disk full", output=["no space"])
            await trio.sleep(0.015)  # "verify" is out, "unpack" is on the wire
            assert [r.step for r in wire.sent][-1] == "verify"
            reporter.step("r1", "stage", "failed", detail="unpack failed")
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [r.step for r in wire.sent] == ["download", "download", "verify", "unpack", "stage"]
    seqs = [r.seq for r in wire.sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert wire.sent[3].detail == "disk full" and wire.sent[3].output == ["no space"]
    assert all(r.host == "web-1" and r.at == 100.0 for r in wire.sent)


async def test_a_new_pump_resends_what_was_not_acked(
    journal: Journal, autojump_clock: trio.testing.MockClock
) -> None:
    reporter = Reporter(journal, "web-1")
    for step in ("download", "verify", "unpack"):
        reporter.step("r1", step, "succeeded")
    first = Wire()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reporter.pump, first.send)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()  # the connection drops
        assert [r.step for r in first.sent] == ["download", "verify", "unpack"]
        journal.ack(first.sent[1].seq)  # only "verify" got its ack through
        reporter.step("r1", "stage", "succeeded")  # recorded while disconnected

        second = Wire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reporter.pump, second.send)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [r.step for r in second.sent] == ["download", "unpack", "stage"]
    # The very same journal entries, not new copies: the seeder can match them to the old ones.
    assert second.sent[:2] == [first.sent[0], first.sent[2]]
    assert second.sent == journal.unsent()


def test_live_lines_are_dropped_and_counted_when_the_buffer_is_full(journal: Journal) -> None:
    reporter = Reporter(journal, "web-1")
    for i in range(LIVE_BUFFER + 3):
        reporter.line("r1", "ApplicationStart", f"line {i}")
    assert reporter.dropped_lines == 3
    first = reporter.live_receive.receive_nowait()
    assert (first.step, first.line) == ("ApplicationStart", "line 0")
    assert journal.unsent() == []  # live lines are best effort, never journaled
