"""Step reports on their way to the seeder: journaled first, then sent, kept until acked.

Hook output lines and download progress are streamed live too, best effort: they go through a
bounded buffer and are dropped (counted) when the seeder is away; the step report keeps the last
lines durably.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from common import messages as m
from peer.journal import Journal

log = logging.getLogger("shoal.peer.reports")

LIVE_BUFFER = 1000


class Reporter:
    def __init__(self, journal: Journal, host: str, clock: Callable[[], float] = time.time):
        self.journal = journal
        self.host = host
        self.clock = clock
        self._changed = trio.Event()
        self.live_send, self.live_receive = trio.open_memory_channel[m.OutputLine | m.Progress](
            LIVE_BUFFER
        )
        self.dropped_lines = 0

    def step(
        self,
        rollout_id: str,
        step: str,
        state: str,
        *,
        attempt: int = 1,
        result: str = "",
        detail: str = "",
        exit_code: int | None = None,
        output: Sequence[str] = (),
    ) -> None:
        """Journal one step result (durably) and wake the sender."""
        report = m.StepReport(
            rollout_id=rollout_id,
            host=self.host,
            step=step,
            attempt=attempt,
            state=state,
            result=result,
            detail=detail,
            exit_code=exit_code,
            output=list(output),
            at=self.clock(),
        )
        self.journal.record(report)
        level = logging.WARNING if state == "failed" else logging.INFO
        log.log(level, "%s %s %s %s", rollout_id, step, state, detail)
        self._changed.set()

    def line(self, rollout_id: str, step: str, text: str) -> None:
        try:
            self.live_send.send_nowait(
                m.OutputLine(rollout_id=rollout_id, host=self.host, step=step, line=text)
            )
        except trio.WouldBlock:
            self.dropped_lines += 1

    def progress(self, rollout_id: str, done: int, total: int, rate: float) -> None:
        msg = m.Progress(rollout_id=rollout_id, host=self.host, done=done, total=total, rate=rate)
        with contextlib.suppress(trio.WouldBlock):  # dropped: the next sample says more
            self.live_send.send_nowait(msg)

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed = trio.Event()

    async def pump(self, send: Callable[[m.Message], Awaitable[None]]) -> None:
        """Send every unacknowledged report, then new ones as they come (one connection)."""
        last = 0
        while True:
            batch = self.journal.unsent(after=last)
            for report in batch:
                await send(report)
                last = report.seq
            if not batch:
                await self.wait_changed()
