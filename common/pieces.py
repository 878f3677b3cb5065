"""How a release's pieces are split between the seeder's slice seeds, and when to give up waiting.

The seeder spends its upload so that each piece leaves it about once (the Kumar-Ross schedule):
piece ``i`` belongs to slice ``i % count``, slice ``k`` is offered by its own *slice seed* (a
seeder session that has only those pieces), and the rollout gives slice ``k`` to one target. That
peer fetches its slice first and forwards it; every other piece it gets from the other peers.
Because a slice seed cannot hand out anything but its slice, the seeder cannot be asked for the
same piece twice, whatever libtorrent's piece picker decides.

A slice can fall behind: its owner may be on a slow link (then the owner's own download link,
shared with everything else it fetches, starves the one flow that brings the slice in), or gone.
Every peer watches how far each slice has come on its side; a slice far behind the others for a
while (:class:`LagWatch`) is fetched from its slice seed directly, by every peer that sees it lag.
They pick rarest-first, so they mostly fetch different pieces of it and then trade them: the
seeder's upload shifts to the lagging slice instead of being duplicated. If the whole download
stalls (:class:`StallDetector`), a peer dials the slice seeds of everything it still misses.

Pure logic, tested without libtorrent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OWN = 7  # libtorrent's top piece priority
MAX_SLICES = 32  # slice seeds per release; more targets than this get no slice of their own


def slice_count(targets: int) -> int:
    return max(1, min(targets, MAX_SLICES))


def slice_mask(num_pieces: int, index: int, count: int) -> list[bool]:
    """The pieces slice ``index`` of ``count`` holds."""
    if not 0 <= index < count:
        raise ValueError(f"slice {index} of {count} does not exist")
    return [i % count == index for i in range(num_pieces)]


BANDS = 3  # the file is fetched front third first (see piece_priorities)


def piece_priorities(
    num_pieces: int, piece_slice: tuple[int, int] | None, bands: int = BANDS
) -> list[int]:
    """Piece priorities for a peer: the front of the file before its back, and within each
    part its own slice first (it is the only way in for those).

    The file is cut into ``bands`` parts: a peer fetches the first part's pieces before the
    second's, rarest first within a part. So the front of the archive is complete while the
    back is still on its way, and verifying and unpacking it (peer.verify) need not wait for
    the last piece. Each band spends two of libtorrent's levels (7..1): own slice, others.
    """
    if not 1 <= bands <= 3:
        raise ValueError(f"{bands} bands do not fit libtorrent's priorities 1..7")
    index, count = piece_slice if piece_slice is not None else (-1, 1)
    out = []
    for i in range(num_pieces):
        band = i * bands // max(num_pieces, 1)
        out.append(OWN - 2 * band - (0 if i % count == index else 1))
    return out


def missing_slices(have: Sequence[bool], count: int) -> list[int]:
    """The slices that hold at least one piece this peer still lacks."""
    return sorted({i % count for i, got in enumerate(have) if not got})


def assists(index: int, lagging: int, count: int, helpers: int) -> bool:
    """Whether the owner of slice ``index`` is one of the ``helpers`` peers that fetch a
    lagging slice from its seed (the owners of the next slices round the ring): a few helpers
    are enough to carry a slice, and every extra one costs seeder upload in duplicates."""
    return 0 < (index - lagging) % count <= helpers


def slice_fractions(have: Sequence[bool], count: int) -> list[float]:
    """How much of each slice this peer has (0..1)."""
    done, total = [0] * count, [0] * count
    for i, got in enumerate(have):
        total[i % count] += 1
        done[i % count] += got
    return [d / t if t else 1.0 for d, t in zip(done, total, strict=True)]


def contiguous(have: Sequence[bool], start: int = 0) -> int:
    """How many pieces from the first one this peer has without a gap, given that it has the
    first ``start`` (a count only grows, so a caller passes the last answer back)."""
    front = start
    while front < len(have) and have[front]:
        front += 1
    return front


@dataclass
class LagWatch:
    """Slices that have stayed far behind the median slice for ``patience`` seconds, or while
    the median slice went ``progress`` further (whichever comes first).

    "Far behind": below ``ratio`` times the median progress and at least ``min_gap`` short of
    it, so the noise of the first pieces never counts as lag. The ``progress`` rule scales with
    the transfer: a release that takes 3 s in all is not kept waiting 2 s for a lagging slice.
    """

    count: int
    patience: float = 2.0
    ratio: float = 0.5
    min_gap: float = 0.2
    # 15 points: on a 16 s transfer that is later than `patience` (long transfers act as
    # before), on a 3 s one it is 0.45 s (bench/README.md).
    progress: float = 0.15
    _since: dict[int, tuple[float, float]] | None = None  # slice -> (when, median then)

    def update(self, have: Sequence[bool], now: float) -> list[int]:
        fractions = slice_fractions(have, self.count)
        median = sorted(fractions)[len(fractions) // 2]
        behind = {
            k
            for k, f in enumerate(fractions)
            if f < self.ratio * median and median - f >= self.min_gap
        }
        since = self._since or {}
        self._since = {k: since.get(k, (now, median)) for k in behind}
        return sorted(
            k
            for k, (t, m) in self._since.items()
            if now - t >= self.patience or median - m >= self.progress - 1e-9  # float fractions
        )


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
