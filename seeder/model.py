"""The live rollout model: what the seeder knows about one rollout and each of its targets.

Persisted fields are what the store keeps; the indexes below them (counts per state, per-wave
tallies, the queue of staged hosts waiting for their wave, the heap of deadlines) are derived from
the persisted fields by :meth:`RolloutModel.reindex` and kept up to date by the machine, so that a
report or a tick costs O(1) whatever the number of targets.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from seeder.states import SETTLED, RolloutState, TargetState
from seeder.waves import Plan, RolloutOptions

ROLLBACK_ATTEMPT = 2  # the Activate attempt that takes a host back to its previous release


@dataclass
class StepRecord:
    step: str
    attempt: int
    state: str
    result: str
    detail: str
    exit_code: int | None
    at: float
    output: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "attempt": self.attempt,
            "state": self.state,
            "result": self.result,
            "at": self.at,
            "detail": self.detail,
        }


@dataclass
class TargetModel:
    host: str
    release_id: str  # what this host is to run (a rollback's targets may differ)
    previous: str | None  # what it ran when the rollout began: where a rollback takes it
    wave: int  # 0-based
    state: TargetState = TargetState.PENDING
    step: str = ""
    error: str = ""
    updated_at: float = 0.0
    deadline: float = 0.0  # of the activation (or rollback) under way; 0: none
    activated: bool = False  # Activate was sent: a failure now counts against its wave's budget
    steps: dict[tuple[str, int], StepRecord] = field(default_factory=dict)
    version: int = 0  # bumped on every change: views cache what they built per version
    view: tuple[int, dict[str, Any]] | None = field(default=None, compare=False, repr=False)

    def failed_output(self) -> list[str]:
        failed = [s for s in self.steps.values() if s.state == "failed" and s.output]
        return failed[-1].output if failed else []


@dataclass
class RolloutModel:
    rollout_id: str
    release_id: str  # the release, or "previous" for a rollback to each host's previous one
    selector: str
    kind: str  # "rollout" or "rollback"
    token: int
    options: RolloutOptions
    plan: Plan
    created_at: float
    state: RolloutState = RolloutState.STAGING
    error: str = ""
    updated_at: float = 0.0
    wave: int = -1  # the wave under way (0-based); -1 while staging
    paused_from: str = ""
    bake_until: float = 0.0
    targets: dict[str, TargetModel] = field(default_factory=dict)
    # --- derived (reindex) ---
    counts: Counter[TargetState] = field(default_factory=Counter)
    wave_settled: list[int] = field(default_factory=list)
    wave_failed: list[int] = field(default_factory=list)
    ready: deque[str] = field(default_factory=deque)  # staged hosts of the current wave, unsent
    rollback_queue: deque[str] = field(default_factory=deque)
    heap: list[tuple[float, str]] = field(default_factory=list)

    @property
    def stage_deadline(self) -> float:
        return self.created_at + self.options.stage_timeout

    @property
    def in_flight(self) -> int:
        return self.counts[TargetState.ACTIVATING] + self.counts[TargetState.ROLLING_BACK]

    def reindex(self) -> None:
        """Rebuild every derived index from the persisted fields (after loading from the store)."""
        self.counts = Counter(t.state for t in self.targets.values())
        waves = len(self.plan.waves)
        self.wave_settled = [0] * waves
        self.wave_failed = [0] * waves
        for t in self.targets.values():
            if t.state in SETTLED:
                self.wave_settled[t.wave] += 1
            if t.state is TargetState.FAILED and t.activated:
                self.wave_failed[t.wave] += 1
        self.ready = deque()
        if self.wave >= 0:
            self.ready.extend(
                h for h in self.plan.waves[self.wave] if self.targets[h].state is TargetState.STAGED
            )
        self.rollback_queue = deque()
        if self.state is RolloutState.ROLLING_BACK:
            self.rollback_queue.extend(
                h
                for w in self.plan.waves
                for h in w
                if self.targets[h].state is TargetState.SUCCEEDED
            )
        self.heap = [(t.deadline, t.host) for t in self.targets.values() if t.deadline]
        heapq.heapify(self.heap)
