"""Rate-limited logging: a flood of alike events becomes a few lines, not one line each.

A port open to the network sees garbage, scans and floods; logging every refused connection
lets an attacker fill the disk and bury the lines that matter. :class:`Summary` is the pure
part: for each ``(what, source)`` pair (``"refused", "10.0.0.9"``) the first event of a window is
logged in full and the rest are counted; when the window ends one line says how many there were
("refused 4,321 more connections from 10.0.0.9 in the last 10 s; last: ..."). At most
``max_sources`` sources are tracked per window; events from further ones are counted together
("from 1,200 other addresses"), so the lines per window stay bounded whatever the attacker
does. :class:`RateLog` is the IO shell: a logger, a clock, and a task that flushes each window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

WINDOW = 10.0
MAX_SOURCES = 20


@dataclass
class _Count:
    events: int = 0
    last: str = ""


class Summary:
    """Which lines to log for a stream of events, at most ``2 * max_sources + 1`` a window."""

    def __init__(self, window: float = WINDOW, max_sources: int = MAX_SOURCES) -> None:
        self.window = window
        self.max_sources = max_sources
        self._start: float | None = None
        self._counts: dict[tuple[str, str], _Count] = {}
        self._others: dict[str, _Count] = {}  # per ``what``: events from untracked sources
        self._other_sources: dict[str, set[str]] = {}

    def record(self, what: str, source: str, detail: str, now: float) -> list[str]:
        """Lines to log now for one event: ``what`` happened to a connection from ``source``."""
        lines = self.flush(now)
        if self._start is None:
            self._start = now
        key = (what, source)
        count = self._counts.get(key)
        if count is not None:
            count.events += 1
            count.last = detail
        elif len(self._counts) < self.max_sources:
            self._counts[key] = _Count()
            lines.append(f"{what} a connection from {source}: {detail}")
        else:
            other = self._others.setdefault(what, _Count())
            other.events += 1
            other.last = f"{source}: {detail}"
            sources = self._other_sources.setdefault(what, set())
            if len(sources) < 100_000:  # a bound on memory, not on the count of events
                sources.add(source)
        return lines

    def flush(self, now: float) -> list[str]:
        """The summaries of a window that has ended by ``now`` (and start a new one)."""
        if self._start is None or now - self._start < self.window:
            return []
        span = f"in the last {now - self._start:.0f} s"
        lines = [
            f"{what} {c.events:,} more connection{_s(c.events)} from {source} {span};"
            f" last: {c.last}"
            for (what, source), c in self._counts.items()
            if c.events
        ]
        for what, c in self._others.items():
            n = len(self._other_sources[what])
            lines.append(
                f"{what} {c.events:,} connection{_s(c.events)} from {n:,} other"
                f" address{'es' if n != 1 else ''} {span}; last: {c.last}"
            )
        self._start = None
        self._counts.clear()
        self._others.clear()
        self._other_sources.clear()
        return lines


def _s(n: int) -> str:
    return "" if n == 1 else "s"


class RateLog:
    """Log events through a :class:`Summary` at ``level``; :meth:`run` flushes every window."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.WARNING,
        window: float = WINDOW,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.logger = logger
        self.level = level
        self.summary = Summary(window, max_sources)
        self.clock = clock

    def event(self, what: str, source: str, detail: str) -> None:
        for line in self.summary.record(what, source, detail, self.clock()):
            self.logger.log(self.level, "%s", line)

    def flush(self) -> None:
        for line in self.summary.flush(self.clock()):
            self.logger.log(self.level, "%s", line)

    async def run(self) -> None:
        """Flush each window's summaries even when no further event comes to trigger them."""
        while True:
            await trio.sleep(self.summary.window / 2)
            self.flush()
