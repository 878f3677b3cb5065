"""The trio shell of the join exchange: one message out, one message in, over a TLS stream.

Everything protocol-shaped is in :mod:`common.join`; this only moves bytes and turns trio's
transport errors into :class:`~common.errors.ConnectionClosed`. Callers put the whole exchange
under their own deadline.
"""

from __future__ import annotations

import trio

from common.errors import ConnectionClosed
from common.join import JoinConnection
from common.messages import Message
from common.protocol import CLOSED, NEED_DATA

RECEIVE_SIZE = 16 * 1024


async def send(stream: trio.abc.Stream, conn: JoinConnection, msg: Message) -> None:
    data = conn.send(msg)
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ConnectionClosed(f"connection lost while sending {msg.TYPE}") from exc


async def receive(stream: trio.abc.Stream, conn: JoinConnection) -> Message:
    """The next whole message; ConnectionClosed if the remote closes first."""
    while True:
        event = conn.next_event()
        if event is CLOSED:
            raise ConnectionClosed("the remote end closed the connection without an answer")
        if event is not NEED_DATA:
            assert isinstance(event, Message)
            return event
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"connection lost while receiving: {exc}") from exc
        conn.receive_data(bytes(data))
