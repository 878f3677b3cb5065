"""The two writers of rollout state: every rollout move and every target move goes through
:func:`move_rollout` or :func:`move_target`, which look the move up in :mod:`seeder.states`' table,
keep the model's derived indexes in step and record the timeline entry.
"""

from __future__ import annotations

from typing import Any

from common.errors import ShoalError
from seeder.model import RolloutModel, TargetModel
from seeder.rollout_events import Effects
from seeder.states import (
    SETTLED,
    RolloutState,
    RolloutTrigger,
    TargetState,
    TargetTrigger,
    rollout_next,
    target_next,
)

RS, RT, TS = RolloutState, RolloutTrigger, TargetState


class NotAllowed(ShoalError):
    """An operator request that the rollout's state does not allow (e.g. resume a halted one)."""


def move_rollout(
    r: RolloutModel, trigger: RolloutTrigger, now: float, fx: Effects, verb: str = ""
) -> None:
    new = rollout_next(r.state, trigger)
    if new is None:
        raise NotAllowed(
            f"cannot {verb or trigger.value} rollout {r.rollout_id}: it is {r.state.value}"
        )
    r.state = new
    r.updated_at = now
    fx.rollout_changed = True
    if trigger is not RT.ABORT:  # abort records its entry once its error text is set
        timeline_rollout(r, fx)


def move_target(
    r: RolloutModel, t: TargetModel, trigger: TargetTrigger, now: float, fx: Effects
) -> None:
    new = target_next(t.state, trigger)
    if new is None:
        return
    before = t.state
    t.state = new
    moved(r, t, before, now, fx)


def moved(r: RolloutModel, t: TargetModel, before: TargetState, now: float, fx: Effects) -> None:
    """Keep the derived indexes in step with one target's move from ``before``."""
    t.updated_at = now
    t.version += 1
    r.counts[before] -= 1
    r.counts[t.state] += 1
    if (before in SETTLED) != (t.state in SETTLED):
        r.wave_settled[t.wave] += 1 if t.state in SETTLED else -1
    if t.state is TS.FAILED and t.activated:
        r.wave_failed[t.wave] += 1
    if t.state not in (TS.ACTIVATING, TS.ROLLING_BACK):
        t.deadline = 0.0
    if t.state is TS.STAGED and t.wave == r.wave:
        r.ready.append(t.host)
    fx.dirty.add(t.host)
    fx.timeline.append(
        (
            "target",
            {
                "host": t.host,
                "state": t.state.value,
                "step": t.step,
                "wave": t.wave + 1,
                "error": t.error,
            },
        )
    )


def timeline_rollout(r: RolloutModel, fx: Effects) -> None:
    fx.timeline.append(("rollout", {"state": r.state.value, "error": r.error, "wave": r.wave + 1}))


def wave_entry(r: RolloutModel, w: int, state: str) -> dict[str, Any]:
    return {"wave": w + 1, "state": state, "hosts": list(r.plan.waves[w])}


def hosts_text(targets: list[TargetModel]) -> str:
    shown = ", ".join(f"{t.host} ({t.error})" if t.error else t.host for t in targets[:5])
    more = f" and {len(targets) - 5} more" if len(targets) > 5 else ""
    return f"{len(targets)} host(s): {shown}{more}"
