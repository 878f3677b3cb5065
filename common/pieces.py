"""How a release's pieces are split between the seeder's slice seeds, and when to give up waiting.

The seeder spends its upload so that each piece leaves it about once (the Kumar-Ross schedule):
piece ``i`` belongs to slice ``i % count``, slice ``k`` is offered by its own *slice seed* (a
seeder session that has only those pieces), and the rollout gives slice ``k`` to one target. That
peer fetches its slice first and forwards it; every other piece it gets from the other peers.
Because a slice seed cannot hand out anything but its slice, the seeder cannot be asked for the
same piece twice, whatever libtorrent's piece picker decides.

If the swarm stalls (a slice's owner is slow or gone), a peer dials the slice seeds of the pieces
it still misses: a stall costs extra seeder upload only for what is actually missing.

Pure logic, tested without libtorrent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OWN = 7  # libtorrent's top piece priority
NORMAL = 4  # libtorrent's default piece priority
MAX_SLICES = 32  # slice seeds per release; more targets than this get no slice of their own


def slice_count(targets: int) -> int:
    return max(1, min(targets, MAX_SLICES))


def slice_mask(num_pieces: int, index: int, count: int) -> list[bool]:
    """The pieces slice ``index`` of ``count`` holds."""
    if not 0 <= index < count:
        raise ValueError(f"slice {index} of {count} does not exist")
    return [i % count == index for i in range(num_pieces)]


def own_slice_priorities(num_pieces: int, index: int, count: int) -> list[int]:
    """Piece priorities for a peer: its own slice first (it is the only way in for those)."""
    return [OWN if i % count == index else NORMAL for i in range(num_pieces)]


def missing_slices(have: Sequence[bool], count: int) -> list[int]:
    """The slices that hold at least one piece this peer still lacks."""
    return sorted({i % count for i, got in enumerate(have) if not got})


@dataclass
class StallDetector:
    """Says when a value (a download's progress) has not moved for ``patience`` seconds;
    fires again every ``patience`` seconds while the stall lasts."""

    patience: float
    _value: float | None = None
    _since: float = 0.0

    def update(self, value: float, now: float) -> bool:
        if value != self._value:
            self._value, self._since = value, now
            return False
        if now - self._since >= self.patience:
            self._since = now
            return True
        return False
