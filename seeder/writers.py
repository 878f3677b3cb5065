"""One writer task per connected peer: commands go out through a bounded queue, each send with
a timeout, so a stalled peer never delays commands to the others.

A peer whose queue is full or whose send times out is disconnected: when it comes back, the
engine gives it the command of each of its targets' current state again (nothing is lost, as
commands are derived from state, and peers treat repeats idempotently).
"""

from __future__ import annotations

import logging

import trio

from common import messages as m
from common.channel import Channel
from common.errors import ConnectionClosed

log = logging.getLogger("shoal.seeder.writers")

QUEUE_SIZE = 1024  # a peer's whole journal backlog of acks fits many times over
SEND_TIMEOUT = 10.0
BATCH = 64  # messages per write at most


class PeerWriter:
    def __init__(self, host: str, channel: Channel, *, send_timeout: float = SEND_TIMEOUT) -> None:
        self.host = host
        self.channel = channel
        self.send_timeout = send_timeout
        self._send, self._receive = trio.open_memory_channel[m.Message](QUEUE_SIZE)
        self._stop = trio.CancelScope()
        self.closed = False  # run() ended: the connection is closed

    def offer(self, msg: m.Message) -> bool:
        """Queue one message without waiting; False (and the peer is cut off) if it is full."""
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            log.warning(
                "peer %s is not keeping up (%d queued); disconnecting", self.host, QUEUE_SIZE
            )
            self.stop()
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def stop(self) -> None:
        self._stop.cancel()

    async def run(self) -> None:
        """Send queued messages until stopped; returns early on a stalled or broken send."""
        with self._stop:
            async with self._receive:
                async for msg in self._receive:
                    batch = [msg]  # whatever queued meanwhile goes out in the same write
                    while len(batch) < BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    try:
                        with trio.fail_after(self.send_timeout):
                            await self.channel.send_many(batch)
                    except trio.TooSlowError:
                        log.warning(
                            "peer %s took over %.0fs to take %d message(s); disconnecting",
                            self.host,
                            self.send_timeout,
                            len(batch),
                        )
                        break
                    except ConnectionClosed:
                        break
        self._send.close()
        self.closed = True  # the connection's handler closes the connection
