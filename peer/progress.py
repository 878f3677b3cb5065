"""Download progress as the seeder's live view wants it: a few samples per second, with a rate.

libtorrent reports the fraction of the release downloaded whenever it changes; :class:`Meter`
turns that into ``(done, total, rate)`` samples, at most one per ``interval`` seconds (plus the
first and the last, so the view sees the start and the end). Pure: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

INTERVAL: Final = 0.5  # seconds between samples sent
SMOOTHING: Final = 0.5  # weight of the newest rate measurement


@dataclass(frozen=True)
class Sample:
    done: int
    total: int
    rate: float  # bytes per second, smoothed


class Meter:
    def __init__(self, total: int, *, interval: float = INTERVAL) -> None:
        self.total = max(0, total)
        self.interval = interval
        self._last: tuple[float, int] | None = None  # (time, done) of the last sample taken
        self._rate = 0.0
        self._finished = False

    def update(self, fraction: float, now: float) -> Sample | None:
        """The sample to send for this reading, or None if it is too soon after the last."""
        done = round(min(max(fraction, 0.0), 1.0) * self.total)
        finished = done >= self.total
        if self._finished:
            return None
        if self._last is not None:
            at, before = self._last
            if now - at < self.interval and not finished:
                return None
            if now > at:
                measured = (done - before) / (now - at)
                self._rate = SMOOTHING * measured + (1 - SMOOTHING) * self._rate
        self._last = (now, done)
        self._finished = finished
        return Sample(done, self.total, 0.0 if finished else self._rate)
