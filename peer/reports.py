"""Step reports on their way to the seeder: journaled first, then sent, kept until acked.

When the journal itself fails (a full disk, an I/O error), a report is held in memory instead
and sent all the same: the seeder hears why a step failed even when the peer cannot write it
down. Held reports get negative sequence numbers, so their acks never touch the journal's outbox;
they are lost if the daemon stops before the seeder acknowledges them (bounded: HELD_MAX).

Hook output lines and download progress are streamed live too, best effort: they go through a
bounded buffer and are dropped (counted) when the seeder is away; the step report keeps the last
lines durably.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import trio

from common import messages as m
from peer.journal import Journal, JournalError

log = logging.getLogger("shoal.peer.reports")

LIVE_BUFFER = 1000
JOURNAL_RETRY = 5.0  # seconds before reading a failing journal's outbox again
HELD_MAX = 10_000  # reports held in memory while the journal fails; the oldest go first


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
        self._held: dict[int, m.StepReport] = {}  # seq < 0 -> report the journal refused
        self._next_held = -1

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
        """Journal one step result (durably, or in memory if the journal fails); wake the sender.

        Never raises for a storage error: a step's outcome must reach the seeder even when the
        peer's own disk is full."""
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
        try:
            self.journal.record(report)
        except JournalError as exc:
            self._hold(report)
            log.error("holding a report in memory (%s): %s", exc, report.step)
        level = logging.WARNING if state == "failed" else logging.INFO
        log.log(level, "%s %s %s %s", rollout_id, step, state, detail)
        self._changed.set()

    def _hold(self, report: m.StepReport) -> None:
        self._held[self._next_held] = replace(report, seq=self._next_held)
        self._next_held -= 1
        while len(self._held) > HELD_MAX:
            dropped = self._held.pop(next(iter(self._held)))
            log.error("dropped a held report: %s %s", dropped.rollout_id, dropped.step)

    @property
    def held(self) -> list[m.StepReport]:
        """Reports the journal refused that the seeder has not acknowledged yet, oldest first."""
        return list(self._held.values())

    def ack(self, seq: int) -> None:
        """The seeder has a report: forget it (from the journal's outbox or from memory)."""
        if seq < 0:
            self._held.pop(seq, None)
            return
        try:
            self.journal.ack(seq)
        except JournalError as exc:  # it stays in the outbox and is sent again: harmless
            log.error("cannot record the ack of report %d: %s", seq, exc)

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
        sent_held = 0  # held seqs count down: everything above this one went out
        while True:
            wait = math.inf
            try:
                batch = self.journal.unsent(after=last)
            except JournalError as exc:
                log.error("cannot read the journal's outbox: %s", exc)
                batch, wait = [], JOURNAL_RETRY
            held = [r for r in self.held if r.seq < sent_held]
            for report in batch + held:
                await send(report)
                if report.seq > 0:
                    last = report.seq
                else:
                    sent_held = report.seq
            if not batch and not held:
                with trio.move_on_after(wait):
                    await self.wait_changed()
