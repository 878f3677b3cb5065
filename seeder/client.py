"""The operator side of the control channel: requests to a running seeder, answers back."""

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
        reply = await self.channel.receive()
        if not isinstance(reply, m.Response) or reply.id != request_id:
            raise RemoteProtocolError(f"expected the response to request {request_id}")
        if not reply.ok:
            raise RemoteError(reply.error_code, reply.error)
        return reply.result


@asynccontextmanager
async def open_client(address: Address) -> AsyncIterator[SeederClient]:
    channel = await connect(address)
    async with channel:
        await channel.send(m.ClientHello(client="shoal-cli"))
        yield SeederClient(channel)
