"""Which pieces a peer may fetch, so that the origin sends each piece about once.

The rollout gives every target a *slice*: piece ``i`` belongs to target ``i % count``. A peer
fetches its own slice first (nobody else has it, so it comes from the seeder), and every other
piece only once some peer besides the seeder has it — at which point libtorrent's rarest-first
picker gets it from that peer, not from the seeder. This is the Kumar-Ross schedule: the seeder
uploads each piece once, to its owner, and the owners forward it to everyone else.

Once its own slice is in, a peer stops talking to the seeder (its caller blocks the seeder's
address), so the seeder's upload goes only to slices still being fetched.

Being idle is normal here (a peer downloads faster than new pieces appear), so a peer only gives
up waiting when it is idle *and* no new piece has appeared in the swarm for ``patience`` seconds:
then a slice owner is gone or stuck, and the peer unlocks everything and takes the pieces
wherever it can (the seeder included).

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
    gave_up: bool = False  # the swarm stalled and every piece was unlocked
    _idle_since: float | None = None
    _last_unlock: float = float("-inf")

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

    def own_done(self, have: Sequence[bool]) -> bool:
        return all(have[self.index :: self.count])

    def update(
        self,
        have: Sequence[bool],
        availability: Sequence[int],
        now: float,
        *,
        origin_counted: bool = True,
    ) -> bool:
        """Unlock what the swarm now offers; True if the priorities changed.

        ``availability`` counts the connected peers that have each piece; ``origin_counted``
        says whether the seeder (which has every piece) is among them.
        """
        changed = False
        enough = 2 if origin_counted else 1
        for i, ok in enumerate(self.unlocked):
            if not ok and (have[i] or availability[i] >= enough):
                self.unlocked[i] = changed = True
        if changed:
            self._last_unlock = now
        if not self.locked:
            return changed
        if not all(have[i] for i, ok in enumerate(self.unlocked) if ok):
            self._idle_since = None
            return changed
        if self._idle_since is None:
            self._idle_since = now
        if now - max(self._idle_since, self._last_unlock) >= self.patience:
            self.unlocked = [True] * self.num_pieces
            self.gave_up = True
            return True
        return changed
