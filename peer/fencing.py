"""Which commands this host still obeys: fencing tokens and aborted rollouts.

Every Stage, Activate and Abort carries its rollout's fencing token, an int that strictly
increases with each new rollout (0: a seeder that does not fence). The peer remembers, durably in
its journal, the newest token it has seen and refuses any command with an older one, so a
stale coordinator (a seeder restored from an old backup, a delayed message of a superseded
rollout) can never act on a host that a newer rollout owns. Repeating a command of the same
rollout is not refused: those stay idempotent.

An aborted rollout starts nothing new on this host. Its kill switch, set by an abort with
``kill``, stops the hooks it is running (see :func:`peer.hooks.run_hook`).
"""

from __future__ import annotations

import trio

from common import messages as m
from peer.journal import Journal

Fenced = m.Stage | m.Activate | m.Abort


def refusal(newest: int, token: int) -> str | None:
    """Why a command carrying ``token`` is refused once ``newest`` was seen; None: obey it."""
    if token < newest:
        return (
            f"fencing token {token} is older than {newest}, the newest this host has seen: "
            "a newer rollout owns this host"
        )
    return None


class Fence:
    """The peer's one writer of fencing state: decides from memory, keeps it in the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._kills: dict[str, trio.Event] = {}
        # Read once, then written through: a write the journal could not make (a full disk)
        # still holds until the peer restarts.
        self._newest = journal.newest_token()
        self._aborted = journal.aborted_rollouts()

    def admit(self, cmd: Fenced) -> m.Refused | None:
        """Record the command's token, or the Refused to send back instead of obeying it."""
        reason = refusal(self._newest, cmd.token)
        if reason is not None:
            return m.Refused(rollout_id=cmd.rollout_id, token=cmd.token, reason=reason)
        self._newest = max(self._newest, cmd.token)
        self.journal.see_token(cmd.rollout_id, cmd.token)
        return None

    def abort(self, cmd: m.Abort) -> None:
        """Start nothing new for the rollout; with ``kill``, stop the hooks it is running."""
        self._aborted.add(cmd.rollout_id)
        self.journal.mark_aborted(cmd.rollout_id)
        if cmd.kill:
            self.kill_switch(cmd.rollout_id).set()

    def aborted(self, rollout_id: str) -> bool:
        return rollout_id in self._aborted

    def kill_switch(self, rollout_id: str) -> trio.Event:
        """Set when the rollout is aborted with ``kill``; hooks of the rollout watch it."""
        return self._kills.setdefault(rollout_id, trio.Event())
