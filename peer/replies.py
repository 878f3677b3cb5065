"""Answers on their way to the seeder that need no journal: refusals and preflight results.

They are best effort, like live output lines: a bounded buffer drained by whichever connection
is up. A reply lost with a connection costs nothing, since the seeder's side times out (a
preflight shows the host as silent) or sends the command again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from common import messages as m

log = logging.getLogger("shoal.peer.replies")

BUFFER = 100


class Replies:
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[m.Message](BUFFER)
        self.dropped = 0

    def send_nowait(self, msg: m.Message) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
            log.warning("reply buffer full; dropped a %s", msg.TYPE)

    async def pump(self, send: Callable[[m.Message], Awaitable[None]]) -> None:
        """Send replies as they come, on one connection."""
        async for msg in self._receive:
            await send(msg)
