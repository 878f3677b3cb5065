"""The trio shell around the sans-IO control protocol: a stream in, messages out.

Everything protocol-shaped lives in :mod:`common.protocol`; this module only moves bytes between
a ``trio.abc.Stream`` (TLS over TCP, a memory stream in tests) and a
:class:`~common.protocol.Connection`, and turns trio's transport errors into
:class:`~common.errors.ConnectionClosed`.
"""

from __future__ import annotations

import trio

from common import messages as m
from common.addr import Address
from common.errors import ConnectionClosed, ProtocolError, RemoteProtocolError, TLSRefused
from common.protocol import CLOSED, NEED_DATA, Connection, Role
from common.tls import ClientTLS

RECEIVE_SIZE = 256 * 1024


class Channel:
    """A message channel over one stream. Sends are serialised; receive from one task only."""

    def __init__(self, stream: trio.abc.Stream, role: Role, **limits: int) -> None:
        self.stream = stream
        self.conn = Connection(role, **limits)
        self._send_lock = trio.Lock()

    async def send(self, msg: m.Message) -> None:
        data = self.conn.send(msg)
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(f"connection lost while sending {msg.TYPE}") from exc

    async def send_many(self, msgs: list[m.Message]) -> None:
        """Send several messages with one write (a writer draining its queue)."""
        data = b"".join(self.conn.send(msg) for msg in msgs)
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(
                    f"connection lost while sending {len(msgs)} messages"
                ) from exc

    async def receive(self) -> m.Message:
        """Next message; ConnectionClosed at end of stream, RemoteProtocolError on garbage."""
        while True:
            event = self.conn.next_event()
            if event is CLOSED:
                raise ConnectionClosed("the remote end closed the connection")
            if event is not NEED_DATA:
                assert isinstance(event, m.Message)
                if isinstance(event, m.Goodbye):
                    raise ConnectionClosed(f"the remote end said goodbye: {event.reason}")
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed("connection lost while receiving") from exc
            self.conn.receive_data(bytes(data))

    async def fail(self, error: ProtocolError) -> None:
        """Tell the remote why we are closing (best effort), then close."""
        if isinstance(error, RemoteProtocolError) and not self.conn.closed:
            with trio.move_on_after(1), _quiet():
                await self.send(m.Goodbye(reason=str(error)))
        await self.aclose()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _quiet:
    """Swallow the errors a best-effort send can meet on a dying connection."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, (ConnectionClosed, ProtocolError))


async def connect(address: Address, tls: ClientTLS, *, local_ip: str | None = None) -> Channel:
    """Dial the seeder's control port (optionally from ``local_ip``) and run the TLS handshake
    (the seeder's certificate must name ``address.host``)."""
    try:
        if local_ip is None:
            transport: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
        else:
            transport = await _open_from(address, local_ip)
    except OSError as exc:
        raise ConnectionClosed(
            f"cannot reach the seeder at {address}: {exc.strerror or exc}"
        ) from exc
    try:
        stream = await tls.connect(transport, address.host)  # closes the transport if it fails
    except TLSRefused as exc:
        hint = ""
        if not exc.ours and "mismatch" in str(exc).lower():
            hint = (
                f" (its certificate does not name {address.host}: dial a name or IP it was"
                " given with `shoal seeder init --host`)"
            )
        raise TLSRefused(f"seeder {address}: {exc}{hint}", ours=exc.ours) from None
    return Channel(stream, Role.CLIENT)


async def _open_from(address: Address, local_ip: str) -> trio.SocketStream:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((local_ip, 0))
        await sock.connect((address.host, address.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
