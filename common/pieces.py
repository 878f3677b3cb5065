"""Which pieces a peer may fetch, so that the origin sends each piece about once.

The rollout gives every target a *slice*: piece ``i`` belongs to target ``i % count``. A peer
fetches its own slice first (nobody else has it, so it comes from the seeder), and every other
piece only once some peer besides the seeder has it — at which point libtorrent's rarest-first
picker gets it from that peer, not from the seeder. This is the Kumar-Ross schedule: the seeder
uploads each piece once, to its owner, and the owners forward it to everyone else.

If a slice's owner is slow or gone, waiting forever would stall the rollout: when a peer has
nothing left to fetch but locked pieces for ``patience`` seconds, it unlocks them all and gets
them wherever it can (the seeder included).

Pure logic: it is given the pieces the peer has, the swarm availability and ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

OWN = 7  # libtorrent's top priority
OPEN = 4  # libtorrent's default priority
LOCKED = 0  # "don't download"


@dataclass
class SlicePlan:
    num_pieces: int
    index: int
    count: int
    patience: float = 1.0
    unlocked: list[bool] = field(default_factory=list)
    _idle_since: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"slice {self.index} of {self.count} does not exist")
        self.unlocked = [i % self.count == self.index for i in range(self.num_pieces)]

    @property
    def locked(self) -> int:
        return self.unlocked.count(False)

    def priorities(self) -> list[int]:
        return [
            OWN if i % self.count == self.index else OPEN if ok else LOCKED
            for i, ok in enumerate(self.unlocked)
        ]

    def update(self, have: Sequence[bool], availability: Sequence[int], now: float) -> bool:
        """Unlock what the swarm now offers; True if the priorities changed."""
        changed = False
        for i, ok in enumerate(self.unlocked):
            if not ok and (have[i] or availability[i] >= 2):
                self.unlocked[i] = changed = True
        if not self.locked:
            return changed
        if all(have[i] for i, ok in enumerate(self.unlocked) if ok):
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= self.patience:
                self.unlocked = [True] * self.num_pieces
                return True
        else:
            self._idle_since = None
        return changed
