"""What peers tell the seeder live and nothing persists: hook output lines and download progress.

Both are best effort on the peer's side (the step reports stay the durable record), so they are
kept in memory only, bounded: at most ``lines_per_step`` lines per (host, rollout, step) — the
newest win — and at most ``max_keys`` such keys (the least recently written go first), so a
chatty or hostile peer cannot grow the seeder's memory. Each observation is also turned into the
event that the hub fans out to subscribers; ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Final

from common import messages as m

LINES_PER_STEP: Final = 500
MAX_KEYS: Final = 20_000
MAX_LINE: Final = 4096  # characters kept of one line


@dataclass(frozen=True)
class Line:
    rollout_id: str
    host: str
    step: str
    line: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "host": self.host,
            "step": self.step,
            "line": self.line,
            "at": self.at,
        }


class LiveLog:
    """Recent hook output per (host, rollout, step) and latest progress per (rollout, host)."""

    def __init__(self, *, lines_per_step: int = LINES_PER_STEP, max_keys: int = MAX_KEYS) -> None:
        self.lines_per_step = lines_per_step
        self.max_keys = max_keys
        self._lines: OrderedDict[tuple[str, str, str], deque[Line]] = OrderedDict()
        self._progress: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # --- observations ------------------------------------------------------------------------

    def output(self, host: str, msg: m.OutputLine, now: float) -> m.RolloutEvent:
        """Keep one line a hook of ``host`` printed; returns its ``output`` event.

        ``host`` is the name the connection registered, not the message's own field: a peer
        cannot write into another host's log."""
        line = Line(msg.rollout_id, host, msg.step, msg.line[:MAX_LINE], now)
        key = (host, msg.rollout_id, msg.step)
        lines = self._lines.get(key)
        if lines is None:
            lines = self._lines[key] = deque(maxlen=self.lines_per_step)
            _trim(self._lines, self.max_keys)
        else:
            self._lines.move_to_end(key)
        lines.append(line)
        data = {"host": host, "step": msg.step, "line": line.line}
        return m.RolloutEvent(rollout_id=msg.rollout_id, seq=0, at=now, kind="output", data=data)

    def progress(self, host: str, msg: m.Progress, now: float) -> m.RolloutEvent:
        """Keep the latest download progress of ``host``; returns its ``progress`` event."""
        total = max(0, msg.total)
        done = min(max(0, msg.done), total) if total else max(0, msg.done)
        rate = float(msg.rate) if math.isfinite(msg.rate) and msg.rate > 0 else 0.0
        data = {"host": host, "done": done, "total": total, "rate": rate}
        key = (msg.rollout_id, host)
        self._progress[key] = {**data, "at": now}
        self._progress.move_to_end(key)
        _trim(self._progress, self.max_keys)
        return m.RolloutEvent(rollout_id=msg.rollout_id, seq=0, at=now, kind="progress", data=data)

    # --- queries -----------------------------------------------------------------------------

    def lines(self, host: str, rollout_id: str) -> list[Line]:
        """The kept lines of ``host`` in one rollout, oldest first."""
        found = [
            line
            for (h, r, _), lines in self._lines.items()
            if h == host and r == rollout_id
            for line in lines
        ]
        return sorted(found, key=lambda line: line.at)

    def steps_with_lines(self, host: str, rollout_id: str) -> set[str]:
        return {s for (h, r, s) in self._lines if h == host and r == rollout_id}

    def progress_of(self, rollout_id: str) -> dict[str, dict[str, Any]]:
        """Latest progress of each host of a rollout: ``{host: {done, total, rate, at}}``."""
        return {h: dict(p) for (r, h), p in self._progress.items() if r == rollout_id}


def _trim(table: OrderedDict[Any, Any], limit: int) -> None:
    while len(table) > limit:
        table.popitem(last=False)
