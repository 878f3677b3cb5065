"""Rollout planning: which hosts a rollout targets, what to tell each next, when a phase ends.

Pure logic on the store's records, with ``now`` passed in, so it is tested without sockets, clocks
or a database. A rollout first *stages* on every target (download, verify, unpack: nothing goes
live), then *activates* (hooks run, ``current`` switches). If any target fails to stage, nothing
is activated anywhere: staging is the safe place to stop.

Target states: ``pending`` → ``staging`` → ``staged`` → ``activating`` → ``succeeded``, or
``failed`` from any of them. Silence is not failure: a target only fails on its own report or
when a phase deadline passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from common.errors import ShoalError
from common.messages import STAGE_STEPS
from seeder.store import HostRecord, Rollout, Target

ACTIVE_STATES = ("staging", "activating")


class SelectorError(ShoalError):
    """A --hosts selector is malformed or matches no host."""


@dataclass(frozen=True)
class Action:
    host: str
    kind: Literal["stage", "activate"]


@dataclass(frozen=True)
class Deadlines:
    stage: float = 1800.0
    activate: float = 3600.0


def select_hosts(selector: str, hosts: Iterable[HostRecord]) -> list[str]:
    """Resolve ``all``, ``NAME,NAME,...`` or ``LABEL=VALUE[,LABEL=VALUE]`` to host names."""
    known = {h.name: h for h in hosts}
    selector = selector.strip()
    if not selector:
        raise SelectorError("empty host selector")
    if selector == "all":
        chosen = sorted(known)
    elif "=" in selector:
        wanted: dict[str, str] = {}
        for part in selector.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise SelectorError(f"host selector {selector!r}: {part!r} is not LABEL=VALUE")
            wanted[key.strip()] = value.strip()
        chosen = sorted(
            n for n, h in known.items() if all(h.labels.get(k) == v for k, v in wanted.items())
        )
    else:
        names = [n.strip() for n in selector.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SelectorError(f"unknown host(s): {', '.join(unknown)}")
        chosen = sorted(set(names))
    if not chosen:
        raise SelectorError(f"host selector {selector!r} matches no host")
    return chosen


def next_actions(rollout: Rollout, connected: set[str]) -> list[Action]:
    """Commands to send now. Re-sending to a host is safe: peers treat them idempotently."""
    if rollout.state == "staging":
        return [
            Action(t.host, "stage")
            for t in rollout.targets
            if t.state in ("pending", "staging") and t.host in connected
        ]
    if rollout.state == "activating":
        return [
            Action(t.host, "activate")
            for t in rollout.targets
            if t.state in ("staged", "activating") and t.host in connected
        ]
    return []


def target_state_after(target: Target, step: str, state: str) -> str:
    """The target state implied by one step report of its host."""
    if target.state in ("succeeded", "failed"):
        return target.state
    if step == "stage":
        if state == "succeeded":
            return "staged" if target.state in ("pending", "staging") else target.state
        return "failed" if state == "failed" else "staging"
    if step == "activate":
        if state == "succeeded":
            return "succeeded"
        return "failed" if state == "failed" else "activating"
    if state == "failed":
        return "failed"
    if step in STAGE_STEPS:
        return "staging" if target.state == "pending" else target.state
    return "activating" if target.state == "staged" else target.state


def overdue(rollout: Rollout, now: float, deadlines: Deadlines) -> list[str]:
    """Targets whose phase deadline has passed without a final report."""
    if rollout.state == "staging":
        limit, states = deadlines.stage, ("pending", "staging")
    elif rollout.state == "activating":
        limit, states = deadlines.activate, ("staged", "activating")
    else:
        return []
    return [t.host for t in rollout.targets if t.state in states and now - t.updated_at > limit]


def phase_outcome(rollout: Rollout) -> tuple[str, str] | None:
    """The rollout's next state and error text once its current phase is over, else None."""
    states = [t.state for t in rollout.targets]
    if rollout.state == "staging":
        if any(s in ("pending", "staging") for s in states):
            return None
        failed = [t.host for t in rollout.targets if t.state == "failed"]
        if failed:
            return "failed", f"staging failed on {_hosts(failed)}; nothing was activated"
        return "activating", ""
    if rollout.state == "activating":
        if any(s in ("staged", "activating") for s in states):
            return None
        failed = [t.host for t in rollout.targets if t.state == "failed"]
        if failed:
            return "failed", f"activation failed on {_hosts(failed)}"
        return "succeeded", ""
    return None


def _hosts(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"{len(names)} host(s): {shown}{more}"
