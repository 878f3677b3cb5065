"""peer.fencing: fencing tokens and aborts, decided from what the journal durably remembers."""

from __future__ import annotations

from pathlib import Path

from common import messages as m
from peer.fencing import Fence, refusal
from peer.journal import Journal


def stage(rollout: str, token: int) -> m.Stage:
    return m.Stage(rollout_id=rollout, manifest={}, torrent=b"", token=token)


def test_refusal_is_for_older_tokens_only() -> None:
    assert refusal(0, 0) is None  # a seeder that does not fence
    assert refusal(5, 5) is None  # the same rollout again
    assert refusal(5, 6) is None  # a newer rollout
    reason = refusal(5, 4)
    assert reason is not None and "4 is older than 5" in reason
    assert refusal(5, 0) is not None  # "unset" after fencing began is older too


def test_fence_remembers_the_newest_token_across_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    fence = Fence(journal)
    assert fence.admit(stage("r1", 3)) is None
    assert fence.admit(stage("r2", 7)) is None
    assert fence.admit(m.Activate(rollout_id="r2", release_id="x", token=7)) is None
    refused = fence.admit(m.Activate(rollout_id="r1", release_id="x", token=3))
    assert refused is not None
    assert (refused.rollout_id, refused.token) == ("r1", 3)
    assert "newer rollout owns this host" in refused.reason
    journal.close()

    reopened = Fence(Journal(tmp_path / "state.db"))
    assert reopened.admit(stage("r1", 3)) is not None
    assert reopened.admit(m.Abort(rollout_id="r1", token=3)) is not None
    assert reopened.admit(stage("r2", 7)) is None
    reopened.journal.close()


def test_a_refused_command_leaves_the_newest_token_alone(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    fence = Fence(journal)
    fence.admit(stage("r2", 7))
    fence.admit(stage("r1", 3))
    assert journal.newest_token() == 7
    journal.close()


async def test_abort_is_durable_and_kill_sets_the_switch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    fence = Fence(journal)
    fence.admit(stage("r1", 1))
    switch = fence.kill_switch("r1")
    fence.abort(m.Abort(rollout_id="r1", token=1, kill=False))
    assert fence.aborted("r1") and not fence.aborted("r2")
    assert not switch.is_set()
    fence.abort(m.Abort(rollout_id="r1", token=1, kill=True))
    assert switch.is_set() and fence.kill_switch("r1") is switch
    assert journal.newest_token() == 1  # marking an abort does not touch the token
    journal.close()
    assert Fence(Journal(tmp_path / "state.db")).aborted("r1")


def test_a_journal_that_cannot_write_does_not_stop_fencing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    fence = Fence(journal)
    journal.close()  # every write now fails, as on a full disk
    assert fence.admit(stage("r2", 7)) is None
    assert fence.admit(stage("r1", 3)) is not None  # still refused: memory holds the token
    fence.abort(m.Abort(rollout_id="r2", token=7))
    assert fence.aborted("r2")
