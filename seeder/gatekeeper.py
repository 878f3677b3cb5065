"""A port's door: the IO shell around :mod:`seeder.admission`, for the control port and the
join listener alike.

The control server hands every accepted stream through here: :meth:`Gatekeeper.admitting`
counts it against the connection caps (refused ones are closed at once, before TLS or any
read), :meth:`Gatekeeper.channel` gives it frame limits and a message-rate pace, and
:meth:`Gatekeeper.hello` bounds the time until its hello. Refusals and closings are logged
through one :class:`~common.ratelog.RateLog`, so a flood of garbage connections writes a few
summary lines, not one line each. The join listener uses the caps, the timeout and the
refusal log (it speaks its own one-message protocol, not the control channel).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Awaitable, Callable

import trio

from common import messages as m
from common.channel import Channel, Pace
from common.errors import RemoteProtocolError
from common.protocol import Role
from common.ratelog import RateLog
from seeder.admission import Admission, Limits, MessageRate

log = logging.getLogger("shoal.seeder.control")

FD_HEADROOM = 256  # descriptors besides control connections: store, torrents, tracker, logs
Handler = Callable[[trio.abc.Stream], Awaitable[None]]


class Gatekeeper:
    def __init__(self, limits: Limits, refusals: RateLog, *, options: bool = True) -> None:
        """``options``: refusals name the ``seeder run`` options of the control port."""
        self.limits = limits
        self.admission = Admission(limits, options=options)
        self.refusals = refusals

    def admitting(self, handler: Handler) -> Handler:
        """``handler`` behind the connection caps."""

        async def admit(stream: trio.abc.Stream) -> None:
            address = remote_ip(stream)
            refused = self.admission.open(address)
            if refused is not None:
                self.refusals.event("refused", address, refused)
                await trio.aclose_forcefully(stream)
                return
            try:
                await handler(stream)
            finally:
                self.admission.close(address)

        return admit

    def channel(self, stream: trio.abc.Stream) -> Channel:
        """The server side of one control connection, with its frame limits and its pace."""
        return Channel(
            stream,
            Role.SERVER,
            pace=self._pace(),
            max_frame=self.limits.max_frame,
            max_hello_frame=self.limits.max_hello_frame,
        )

    async def hello(self, channel: Channel) -> m.Message:
        """The client's first message, if it comes within the hello timeout."""
        timeout = self.limits.hello_timeout
        with trio.move_on_after(timeout):
            return await channel.receive()
        raise RemoteProtocolError(f"no hello within {timeout:g}s (--hello-timeout)")

    def _pace(self) -> Pace:
        rate = MessageRate(self.limits, trio.current_time())

        async def pace() -> None:
            delay = rate.take(trio.current_time())
            if delay > 0:
                await trio.sleep(delay)

        return pace

    def raise_fd_limit(self) -> None:
        """Raise this process's open-file limit to what the connection cap needs (as far as
        the hard limit allows), and say so when the hard limit is too low for it."""
        needed = self.limits.max_connections + FD_HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft >= needed:
            return
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return
        if target < needed:
            log.warning(
                "open-file limit is %d (hard): fewer than --max-connections %d + %d; raise"
                " LimitNOFILE (systemd) or ulimit -Hn",
                target,
                self.limits.max_connections,
                FD_HEADROOM,
            )


def remote_ip(stream: trio.abc.Stream) -> str:
    """The remote IP of a TCP stream, also under TLS (``transport_stream``); "local" when the
    stream has no socket (a memory stream in tests)."""
    inner: object = stream
    for _ in range(4):
        sock = getattr(inner, "socket", None)
        if sock is not None:
            try:
                peer = sock.getpeername()
            except OSError:
                return "unknown"
            return str(peer[0]) if isinstance(peer, tuple) else str(peer)
        inner = getattr(inner, "transport_stream", None)
        if inner is None:
            break
    return "local"
