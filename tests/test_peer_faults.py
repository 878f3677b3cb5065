"""The peer daemon's own faults, with its real journal (SQLite) and real trio tasks: a job that
crashes, a journal that cannot write, resume data that is bad."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from common.torrent import make_torrent
from common.torrent.metainfo import load
from common.torrent.resume import load_resume
from peer.daemon import Jobs, report_crash
from peer.journal import Journal, JournalError
from peer.reports import Reporter


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state.db")
    try:
        yield j
    finally:
        j.close()


async def test_a_crashing_job_is_reported_and_the_others_go_on(
    journal: Journal, autojump_clock: trio.testing.MockClock
) -> None:
    reporter = Reporter(journal, "web-1", clock=lambda: 5.0)
    finished = []

    async def crashes() -> None:
        await trio.sleep(1)
        raise KeyError("manifest")

    async def works() -> None:
        await trio.sleep(2)
        finished.append("works")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            jobs = Jobs(nursery, lambda key, exc: report_crash(reporter, key, exc))
            jobs.start(("activate", "r1", "2"), crashes)
            jobs.start(("stage", "r2"), works)
            await trio.sleep(1.5)
            assert jobs.running == {("stage", "r2")}  # the crashed one is gone, the other runs
            jobs.start(("activate", "r1", "2"), works)  # and its key can run again
    assert finished == ["works", "works"]
    (crash,) = journal.unsent()
    assert (crash.rollout_id, crash.step, crash.attempt) == ("r1", "activate", 2)
    assert (crash.state, crash.result) == ("failed", "error")
    assert "KeyError" in crash.detail and "manifest" in crash.detail


def _break(journal: Journal, path: Path) -> None:
    """Make every write fail the way a full disk does (SQLite: the file is read-only now)."""
    journal.close()
    journal._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


async def test_reports_the_journal_refuses_are_held_and_sent_anyway(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "state.db"
    journal = Journal(path)
    reporter = Reporter(journal, "web-1")
    reporter.step("r1", "download", "running")
    _break(journal, path)
    with pytest.raises(JournalError, match="journal failed"):
        journal.record(m.StepReport(rollout_id="r1", host="h", step="x", attempt=1, state="s"))
    reporter.step("r1", "download", "failed", result="error", detail="the disk is full")
    reporter.step("r1", "stage", "failed", result="error", detail="download: the disk is full")
    assert [r.step for r in reporter.held] == ["download", "stage"]
    assert all(r.seq < 0 for r in reporter.held)

    sent: list[m.StepReport] = []

    async def send(msg: m.Message) -> None:
        assert isinstance(msg, m.StepReport)
        sent.append(msg)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reporter.pump, send)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [(r.step, r.state) for r in sent] == [
        ("download", "running"),  # journalled before the disk filled
        ("download", "failed"),
        ("stage", "failed"),
    ]
    for report in sent:
        reporter.ack(report.seq)  # the journalled one's ack fails to write: logged, not raised
    assert reporter.held == []
    journal.close()


def test_bad_or_foreign_resume_data_is_ignored_and_removed(tmp_path: Path) -> None:
    payload = tmp_path / "a" / "release.bin"
    payload.parent.mkdir()
    payload.write_bytes(b"x" * 100_000)
    torrent, _ = make_torrent(payload, tracker_url="http://127.0.0.1:1/announce")
    resume = tmp_path / "r.resume"
    resume.write_bytes(b"not bencoded at all")
    assert load_resume(resume, load(torrent)) is None
    assert not resume.exists()
    assert load_resume(resume, load(torrent)) is None  # missing: nothing to say


def test_a_journal_on_a_full_disk_opens_read_only_and_recovers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        path = disk / "state.db"
        first = Journal(path)
        kept = first.record(
            m.StepReport(rollout_id="r1", host="h", step="unpack", attempt=1, state="running")
        )
        first.add_release({"release_id": "app-1"}, b"torrent", 1.0)
        first.close()
        filler = disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\xff" * 65536)
                f.flush()
        with pytest.raises(JournalError):
            Journal(path)  # what used to stop the daemon at start-up
        journal = Journal.open(path)
        try:
            assert not journal.writable
            assert journal.unsent() == [kept]  # what it knew is still readable
            assert journal.release("app-1") is not None
            with pytest.raises(JournalError):
                journal.add_release({"release_id": "app-2"}, b"t", 2.0)
            assert not journal.reopen()
            filler.unlink()
            assert journal.reopen() and journal.writable
            journal.add_release({"release_id": "app-2"}, b"t", 2.0)
            assert journal.release("app-2") is not None
        finally:
            journal.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
