"""Running a daemon until SIGTERM or SIGINT, then shutting it down through cancellation.

Cancellation is how everything in shoal stops: hook process groups are killed, the libtorrent
session is closed, SQLite files are closed by their ``finally`` blocks.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("shoal")


async def run_until_signalled(main: Callable[[], Awaitable[object]]) -> None:
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s received; shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        await main()
        nursery.cancel_scope.cancel()
