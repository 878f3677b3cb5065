"""Plain-data views of the seeder's state, as the CLI shows them (and ``--json`` prints them).

Rollout views are built from the live model in memory (one pass over the targets), plus the last
entries of the persisted timeline.
"""

from __future__ import annotations

from typing import Any

import trio

from common.release import Manifest
from seeder.model import RolloutModel, TargetModel
from seeder.promotion import ENV_LABEL
from seeder.states import TERMINAL, RolloutState
from seeder.store import Store

TIMELINE_LIMIT = 1000
CHUNK = 250  # targets between two checkpoints of the loop

_WAVE_STATE = {
    RolloutState.ACTIVATING: "activating",
    RolloutState.BAKING: "baking",
    RolloutState.GATING: "gating",
    RolloutState.PAUSED: "paused",
    RolloutState.SUCCEEDED: "done",
    RolloutState.HALTED: "halted",
    RolloutState.ROLLING_BACK: "halted",
    RolloutState.FAILED: "halted",
    RolloutState.ABORTED: "aborted",
}


def release(manifest: Manifest, created_at: float) -> dict[str, Any]:
    return {**manifest.to_dict(), "created_at": created_at}


def hosts(
    records: list[Any],
    connected: set[str],
    last_seen: dict[str, float],
    lookup: Any,
    versions: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for h in records:
        found = lookup(h.name)
        rollout_id, state, step, error = ("", "", "", "")
        if found is not None:
            rollout_id, t = found
            state, step, error = t.state.value, t.step, t.error
        out.append(
            {
                "name": h.name,
                "address": h.address,
                "bt_port": h.bt_port,
                "labels": h.labels,
                "env": h.labels.get(ENV_LABEL, ""),
                "connected": h.name in connected,
                "last_seen": last_seen.get(h.name, h.last_seen),
                "current": h.current,
                "previous": h.previous,
                "staged": h.staged,
                "rollout": rollout_id,
                "state": state,
                "step": step,
                "error": error,
                "version": (versions or {}).get(h.name, ""),
            }
        )
    return out


def _target(t: TargetModel) -> dict[str, Any]:
    """One target with its steps; rebuilt only when the target changed since the last view."""
    if t.view is not None and t.view[0] == t.version:
        return t.view[1]
    records = list(t.steps.values())
    view = {
        **_target_brief(t),
        "exit_codes": {s.step: s.exit_code for s in records if s.exit_code is not None},
        "steps": [s.to_dict() for s in records],
        "output": t.failed_output(),
    }
    t.view = (t.version, view)
    return view


def _target_brief(t: TargetModel) -> dict[str, Any]:
    return {
        "host": t.host,
        "state": t.state.value,
        "step": t.step,
        "error": t.error,
        "wave": t.wave + 1,
        "release_id": t.release_id,
        "previous": t.previous,
        "exit_codes": {},
        "steps": [],
        "output": [],
    }


def wave_state(r: RolloutModel, index: int) -> str:
    if index < r.wave:
        return "done"
    if index > r.wave:
        return "skipped" if r.state in TERMINAL else "pending"
    return _WAVE_STATE.get(r.state, "pending")


async def rollout(
    store: Store, r: RolloutModel, timeline_limit: int = TIMELINE_LIMIT, *, steps: bool = True
) -> dict[str, Any]:
    """The rollout as ``status``/``show`` print it. Built in slices with checkpoints between,
    so that a view of thousands of hosts never stalls the seeder's loop."""
    targets = []
    for i, host in enumerate(sorted(r.targets)):
        if i % CHUNK == CHUNK - 1:
            await trio.lowlevel.checkpoint()
        t = r.targets[host]
        targets.append(_target(t) if steps else _target_brief(t))

    return {
        "rollout_id": r.rollout_id,
        "release_id": r.release_id,
        "kind": r.kind,
        "selector": r.selector,
        "token": r.token,
        "state": r.state.value,
        "error": r.error,
        "wave": r.wave + 1,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "options": r.options.to_dict(),
        "budget": {
            "max_failures": r.plan.max_failures,
            "wave_max_failures": r.plan.wave_max_failures,
            "min_staged": r.plan.min_staged,
        },
        "waves": [
            {"index": i + 1, "hosts": list(w), "state": wave_state(r, i)}
            for i, w in enumerate(r.plan.waves)
        ],
        "targets": targets,
        "promotion": store.rollout_promotion(r.rollout_id),
        "timeline": store.timeline(r.rollout_id, timeline_limit) if timeline_limit else [],
    }
