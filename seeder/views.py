"""Plain-data views of the seeder's state, as the CLI shows them (and ``--json`` prints them)."""

from __future__ import annotations

from typing import Any

from common.errors import ShoalError
from common.release import Manifest
from seeder.store import Rollout, Store


class NotFound(ShoalError):
    pass


def release(manifest: Manifest, created_at: float) -> dict[str, Any]:
    return {**manifest.to_dict(), "created_at": created_at}


def hosts(store: Store, connected: set[str]) -> list[dict[str, Any]]:
    active = {
        t.host: (r.rollout_id, t.state, t.step, t.error)
        for r in reversed(store.rollouts(limit=20))
        for t in r.targets
    }
    out = []
    for h in store.hosts():
        rollout_id, state, step, error = active.get(h.name, ("", "", "", ""))
        out.append(
            {
                "name": h.name,
                "address": h.address,
                "bt_port": h.bt_port,
                "labels": h.labels,
                "connected": h.name in connected,
                "last_seen": h.last_seen,
                "current": h.current,
                "staged": h.staged,
                "rollout": rollout_id,
                "state": state,
                "step": step,
                "error": error,
            }
        )
    return out


def find_rollout(store: Store, rollout_id: str | None) -> dict[str, Any]:
    if rollout_id:
        found = store.rollout(rollout_id)
        if found is None:
            raise NotFound(f"unknown rollout {rollout_id!r}")
    else:
        latest = store.rollouts(limit=1)
        if not latest:
            raise NotFound("no rollout has been started yet")
        found = latest[0]
    return rollout(store, found)


def rollout(store: Store, r: Rollout) -> dict[str, Any]:
    events = store.events(r.rollout_id)
    targets = []
    for t in r.targets:
        mine = [e for e in events if e.host == t.host]
        failed = next((e for e in mine if e.state == "failed" and e.output), None)
        targets.append(
            {
                "host": t.host,
                "state": t.state,
                "step": t.step,
                "error": t.error,
                "exit_codes": {e.step: e.exit_code for e in mine if e.exit_code is not None},
                "steps": [
                    {
                        "step": e.step,
                        "attempt": e.attempt,
                        "state": e.state,
                        "result": e.result,
                        "at": e.at,
                        "detail": e.detail,
                    }
                    for e in mine
                ],
                "output": failed.output if failed else [],
            }
        )
    return {
        "rollout_id": r.rollout_id,
        "release_id": r.release_id,
        "selector": r.selector,
        "state": r.state,
        "error": r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "targets": targets,
    }
