"""The operator side of the control channel: requests to a running seeder, answers back.

A streaming method (``rollout.subscribe``, ``logs.subscribe``) answers with one response and
then events, the last of kind ``end``; after it the connection takes requests again. To leave a
stream before its end, close the connection.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from common import messages as m
from common.addr import Address
from common.channel import Channel, connect
from common.crypto.certs import CertificateError, Credential, cert_pem
from common.errors import ConfigError, RemoteError, RemoteProtocolError
from common.tls import ClientTLS

IDENTITY_ENV = "SHOAL_IDENTITY"
NO_CREDENTIALS = (
    "no credentials: pass --identity or set SHOAL_IDENTITY; create them with"
    " `shoal seeder init` (DATA_DIR/identity/admin.pem) or `shoal admin cert`"
)


def credential_path(given: str | Path | None) -> Path:
    """The operator's credential file: ``--identity``, else ``$SHOAL_IDENTITY``."""
    chosen = given or os.environ.get(IDENTITY_ENV)
    if not chosen:
        raise ConfigError(NO_CREDENTIALS)
    return Path(chosen)


def load_credential(path: Path) -> tuple[ClientTLS, Credential]:
    """The TLS client of an operator credential file (certificate, key and CA in one PEM)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the credential {path}: {exc.strerror}. {NO_CREDENTIALS}"
        ) from None
    try:
        credential = Credential.from_pem(data)
    except CertificateError as exc:
        raise ConfigError(f"{path} is not a shoal credential: {exc}") from None
    return ClientTLS(path, None, cert_pem(credential.ca)), credential


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


async def connect_client(address: Address, tls: ClientTLS) -> SeederClient:
    """A client on a new connection; the caller closes it (``client.channel.aclose()``)."""
    channel = await connect(address, tls)
    try:
        await channel.send(m.ClientHello(client="shoal-cli"))
    except BaseException:
        await channel.aclose()
        raise
    return SeederClient(channel)


@asynccontextmanager
async def open_client(address: Address, tls: ClientTLS) -> AsyncIterator[SeederClient]:
    client = await connect_client(address, tls)
    async with client.channel:
        yield client
