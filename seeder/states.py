"""The rollout's states and its one transition table, for the rollout and for each target.

Read it like h11's ``_state.py``: every legal move is one line, ``(state, trigger): next state``.
Anything not listed is not a move; :func:`rollout_next` and :func:`target_next` return ``None``
for it and the machine (:mod:`seeder.machine`) leaves the state alone. The machine decides *when*
a trigger fires; this module only says *where* it leads.

Meanings an operator can rely on:

- ``failed``: the release is live nowhere it was not before (staging fell short, or every host
  that had switched was rolled back).
- ``halted``: stopped part-way (a failure budget was exceeded or a gate said no): some hosts run
  the new release, the others their old one; nothing more happens until an operator acts.
- ``aborted``: stopped by an operator; running hooks finished (or were killed with ``--now``).
- ``succeeded``: every wave activated and passed its bake and gate (failures within budget are
  listed in the error text).
"""

from __future__ import annotations

import enum


class RolloutState(enum.StrEnum):
    STAGING = "staging"
    ACTIVATING = "activating"
    BAKING = "baking"
    GATING = "gating"
    PAUSED = "paused"
    HALTED = "halted"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class RolloutTrigger(enum.StrEnum):
    STAGED_ENOUGH = "staged_enough"  # --min-staged of the targets are staged
    STAGE_FELL_SHORT = "stage_fell_short"  # min-staged can no longer be met, or budget exceeded
    WAVE_DONE = "wave_done"  # every target of the current wave settled, within budget
    BAKED = "baked"  # the bake time after a wave passed and a gate is configured
    NEXT_WAVE = "next_wave"  # baked (no gate) or gate passed, and another wave remains
    LAST_WAVE_PASSED = "last_wave_passed"  # baked / gate passed after the last wave
    GATE_PASSED = "gate_passed"  # gate exited 0 and another wave remains
    HALT = "halt"  # failure budget exceeded or gate failed, no auto-rollback
    ROLLBACK = "rollback"  # same, with --auto-rollback
    ROLLBACK_DONE = "rollback_done"  # every switched host is back on its previous release
    ROLLBACK_FAILED = "rollback_failed"  # a host could not be rolled back
    PAUSE = "pause"
    RESUME_STAGING = "resume_staging"  # resume a rollout paused before wave 1
    RESUME = "resume"  # resume a rollout paused after wave 1 started
    ABORT = "abort"


S, T = RolloutState, RolloutTrigger

ROLLOUT_TABLE: dict[tuple[RolloutState, RolloutTrigger], RolloutState] = {
    (S.STAGING, T.STAGED_ENOUGH): S.ACTIVATING,
    (S.STAGING, T.STAGE_FELL_SHORT): S.FAILED,
    (S.STAGING, T.PAUSE): S.PAUSED,
    (S.STAGING, T.ABORT): S.ABORTED,
    (S.ACTIVATING, T.WAVE_DONE): S.BAKING,
    (S.ACTIVATING, T.HALT): S.HALTED,
    (S.ACTIVATING, T.ROLLBACK): S.ROLLING_BACK,
    (S.ACTIVATING, T.PAUSE): S.PAUSED,
    (S.ACTIVATING, T.ABORT): S.ABORTED,
    (S.BAKING, T.BAKED): S.GATING,
    (S.BAKING, T.NEXT_WAVE): S.ACTIVATING,
    (S.BAKING, T.LAST_WAVE_PASSED): S.SUCCEEDED,
    (S.BAKING, T.PAUSE): S.PAUSED,
    (S.BAKING, T.ABORT): S.ABORTED,
    (S.GATING, T.GATE_PASSED): S.ACTIVATING,
    (S.GATING, T.LAST_WAVE_PASSED): S.SUCCEEDED,
    (S.GATING, T.HALT): S.HALTED,
    (S.GATING, T.ROLLBACK): S.ROLLING_BACK,
    (S.GATING, T.PAUSE): S.PAUSED,
    (S.GATING, T.ABORT): S.ABORTED,
    (S.PAUSED, T.RESUME_STAGING): S.STAGING,
    (S.PAUSED, T.RESUME): S.ACTIVATING,  # the wave in progress continues (or bakes again)
    (S.PAUSED, T.ABORT): S.ABORTED,
    (S.ROLLING_BACK, T.ROLLBACK_DONE): S.FAILED,
    (S.ROLLING_BACK, T.ROLLBACK_FAILED): S.HALTED,
    (S.ROLLING_BACK, T.ABORT): S.ABORTED,
}

TERMINAL = frozenset({S.HALTED, S.SUCCEEDED, S.FAILED, S.ABORTED})


class TargetState(enum.StrEnum):
    PENDING = "pending"
    STAGING = "staging"
    STAGED = "staged"
    ACTIVATING = "activating"
    SUCCEEDED = "succeeded"  # switched to the rollout's release
    FAILED = "failed"  # failed to stage or activate (the peer left its old release live)
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"  # back on the release it had before
    ROLLBACK_FAILED = "rollback_failed"


class TargetTrigger(enum.StrEnum):
    STAGE_SENT = "stage_sent"
    STAGE_PROGRESS = "stage_progress"  # a running stage step: the peer has the command
    STAGE_OK = "stage_ok"
    STAGE_FAILED = "stage_failed"
    ACTIVATE_SENT = "activate_sent"
    ACTIVATE_OK = "activate_ok"
    ACTIVATE_FAILED = "activate_failed"  # includes "interrupted" (peer killed during a hook)
    ROLLBACK_SENT = "rollback_sent"
    NO_PREVIOUS = "no_previous"  # to be rolled back, but it ran nothing before this rollout
    DEADLINE = "deadline"  # no final report before the phase's deadline
    REFUSED = "refused"  # the peer refused the command (a newer rollout's token)


TS, TT = TargetState, TargetTrigger

TARGET_TABLE: dict[tuple[TargetState, TargetTrigger], TargetState] = {
    (TS.PENDING, TT.STAGE_SENT): TS.STAGING,
    (TS.PENDING, TT.STAGE_PROGRESS): TS.STAGING,
    (TS.PENDING, TT.STAGE_OK): TS.STAGED,
    (TS.PENDING, TT.STAGE_FAILED): TS.FAILED,
    (TS.PENDING, TT.DEADLINE): TS.FAILED,
    (TS.PENDING, TT.REFUSED): TS.FAILED,
    (TS.STAGING, TT.STAGE_OK): TS.STAGED,
    (TS.STAGING, TT.STAGE_FAILED): TS.FAILED,
    (TS.STAGING, TT.DEADLINE): TS.FAILED,
    (TS.STAGING, TT.REFUSED): TS.FAILED,
    (TS.STAGED, TT.ACTIVATE_SENT): TS.ACTIVATING,
    (TS.STAGED, TT.REFUSED): TS.FAILED,
    (TS.ACTIVATING, TT.ACTIVATE_OK): TS.SUCCEEDED,
    (TS.ACTIVATING, TT.ACTIVATE_FAILED): TS.FAILED,
    (TS.ACTIVATING, TT.DEADLINE): TS.FAILED,
    (TS.ACTIVATING, TT.REFUSED): TS.FAILED,
    (TS.SUCCEEDED, TT.ROLLBACK_SENT): TS.ROLLING_BACK,
    (TS.SUCCEEDED, TT.NO_PREVIOUS): TS.ROLLBACK_FAILED,
    (TS.ROLLING_BACK, TT.ACTIVATE_OK): TS.ROLLED_BACK,
    (TS.ROLLING_BACK, TT.ACTIVATE_FAILED): TS.ROLLBACK_FAILED,
    (TS.ROLLING_BACK, TT.DEADLINE): TS.ROLLBACK_FAILED,
    (TS.ROLLING_BACK, TT.REFUSED): TS.ROLLBACK_FAILED,
}

# A target in one of these has nothing more to do in its wave.
SETTLED = frozenset({TS.SUCCEEDED, TS.FAILED, TS.ROLLED_BACK, TS.ROLLBACK_FAILED})
# Counted against the failure budgets.
FAILURES = frozenset({TS.FAILED, TS.ROLLBACK_FAILED})


def rollout_next(state: RolloutState, trigger: RolloutTrigger) -> RolloutState | None:
    return ROLLOUT_TABLE.get((state, trigger))


def target_next(state: TargetState, trigger: TargetTrigger) -> TargetState | None:
    return TARGET_TABLE.get((state, trigger))
