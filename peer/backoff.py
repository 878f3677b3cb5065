"""Reconnect delays: exponential with full jitter, capped, reset after a good connection."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; grows with each failure, jittered so a fleet
        that lost its seeder does not reconnect in lockstep."""
        ceiling = min(self.cap, self.initial * self.factor**self.failures)
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
