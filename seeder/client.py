"""The operator side of the control channel: requests to a running seeder, answers back.

A streaming method (``rollout.subscribe``, ``logs.subscribe``) answers with one response and
then events, the last of kind ``end``; after it the connection takes requests again. To leave a
stream before its end, close the connection.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from common import messages as m
from common.addr import Address
from common.channel import Channel, connect
from common.errors import RemoteError, RemoteProtocolError


class SeederClient:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one request and wait for its response; RemoteError if the seeder refused it."""
        request_id = next(self._ids)
        await self.channel.send(m.Request(id=request_id, method=method, params=params))
        return await self._response(request_id)

    async def subscribe(
        self, method: str, **params: Any
    ) -> tuple[dict[str, Any], AsyncIterator[m.RolloutEvent]]:
        """Start a stream: its snapshot, and its events up to and including the ``end`` one."""
        request_id = next(self._ids)
        await self.channel.send(m.Request(id=request_id, method=method, params=params))
        snapshot = await self._response(request_id)

        async def events() -> AsyncIterator[m.RolloutEvent]:
            while True:
                msg = await self.channel.receive()
                if not isinstance(msg, m.RolloutEvent):
                    raise RemoteProtocolError(f"expected a rollout event, got {msg.TYPE}")
                yield msg
                if msg.kind == "end":
                    return

        return snapshot, events()

    async def _response(self, request_id: int) -> dict[str, Any]:
        reply = await self.channel.receive()
        if not isinstance(reply, m.Response) or reply.id != request_id:
            raise RemoteProtocolError(f"expected the response to request {request_id}")
        if not reply.ok:
            raise RemoteError(reply.error_code, reply.error)
        return reply.result


async def connect_client(address: Address) -> SeederClient:
    """A client on a new connection; the caller closes it (``client.channel.aclose()``)."""
    channel = await connect(address)
    try:
        await channel.send(m.ClientHello(client="shoal-cli"))
    except BaseException:
        await channel.aclose()
        raise
    return SeederClient(channel)


@asynccontextmanager
async def open_client(address: Address) -> AsyncIterator[SeederClient]:
    client = await connect_client(address)
    async with client.channel:
        yield client
