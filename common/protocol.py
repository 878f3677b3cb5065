"""The control protocol as a sans-IO state machine: bytes in, messages out, no sockets.

Modelled on h11. A :class:`Connection` is told its role (``CLIENT``: the side that dials, a peer
daemon or the CLI; ``SERVER``: the seeder). ``send(msg)`` checks the message is legal now and
returns the bytes to write; ``receive_data(data)`` takes bytes read from the transport (``b""``
for end of stream); ``next_event()`` returns the next complete message, ``NEED_DATA``, or
``CLOSED``. Framing is msgpack's own streaming unpacker: messages are concatenated maps.

Errors say whose fault they are: :class:`LocalProtocolError` when our side breaks the rules,
:class:`RemoteProtocolError` when the bytes or messages received do.
"""

from __future__ import annotations

import enum
from typing import Final

import msgpack

from common import messages as m
from common.errors import LocalProtocolError, RemoteProtocolError

MAX_MESSAGE_SIZE: Final = 256 * 1024 * 1024


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Sentinel(enum.Enum):
    NEED_DATA = "need-data"
    CLOSED = "closed"


NEED_DATA: Final = Sentinel.NEED_DATA
CLOSED: Final = Sentinel.CLOSED

Event = m.Message | Sentinel

# What each kind of client may say after its hello, and what the server may say back to it.
_PEER_SENDS = (
    m.Heartbeat,
    m.StepReport,
    m.PreflightResult,
    m.Progress,
    m.Refused,
    m.OutputLine,
    m.Goodbye,
)
_TO_PEER = (
    m.Welcome,
    m.Stage,
    m.SwarmMembers,
    m.Activate,
    m.Abort,
    m.Preflight,
    m.Ack,
    m.Goodbye,
)
_CLI_SENDS = (m.Request, m.Goodbye)
_TO_CLI = (m.Response, m.RolloutEvent, m.Goodbye)


class Connection:
    """One side of one control connection."""

    def __init__(self, role: Role, *, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.role = role
        self.kind: str | None = None  # "peer" or "cli", known after the hello
        self.closed = False
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_message_size)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._fed = 0
        self._consumed = 0  # stream offset after the last whole message
        self._eof = False

    # --- sending -------------------------------------------------------------------------------

    def send(self, msg: m.Message) -> bytes:
        """Return the bytes that put ``msg`` on the wire, if it is legal to send it now."""
        if self.closed:
            raise LocalProtocolError(f"cannot send {msg.TYPE}: the connection is closed")
        if self.role is Role.CLIENT:
            if self.kind is None:
                if isinstance(msg, m.Hello):
                    self.kind = "peer"
                elif isinstance(msg, m.ClientHello):
                    self.kind = "cli"
                else:
                    raise LocalProtocolError(f"a client must say hello first, not {msg.TYPE}")
            elif isinstance(msg, (m.Hello, m.ClientHello)):
                raise LocalProtocolError("hello was already sent")
            elif not isinstance(msg, _PEER_SENDS if self.kind == "peer" else _CLI_SENDS):
                raise LocalProtocolError(f"a {self.kind} may not send {msg.TYPE}")
        else:
            if self.kind is None:
                raise LocalProtocolError(f"cannot send {msg.TYPE} before the client's hello")
            if not isinstance(msg, _TO_PEER if self.kind == "peer" else _TO_CLI):
                raise LocalProtocolError(f"the seeder may not send {msg.TYPE} to a {self.kind}")
        data = self._packer.pack(m.to_wire(msg))
        if isinstance(msg, m.Goodbye):
            self.closed = True
        return data

    # --- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport; ``b""`` means the remote closed its side."""
        if self._eof:
            raise LocalProtocolError("received data after end of stream")
        if not data:
            self._eof = True
            return
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise RemoteProtocolError("control message exceeds the size limit") from None
        self._fed += len(data)

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return self._fed - self._consumed

    def next_event(self) -> Event:
        try:
            obj = self._unpacker.unpack()
        except msgpack.OutOfData:
            if not self._eof:
                return NEED_DATA
            if self.pending_bytes:
                raise RemoteProtocolError(
                    f"connection closed in the middle of a message ({self.pending_bytes} bytes)"
                ) from None
            self.closed = True
            return CLOSED
        except (ValueError, msgpack.ExtraData, msgpack.StackError) as exc:
            raise RemoteProtocolError(
                f"undecodable control message ({type(exc).__name__}: {str(exc) or 'bad bytes'})"
            ) from None
        self._consumed = self._unpacker.tell()
        msg = m.from_wire(obj)
        self._check_incoming(msg)
        if isinstance(msg, m.Goodbye):
            self.closed = True
        return msg

    def _check_incoming(self, msg: m.Message) -> None:
        if self.role is Role.SERVER:
            if self.kind is None:
                if isinstance(msg, m.Hello):
                    self.kind = "peer"
                elif isinstance(msg, m.ClientHello):
                    self.kind = "cli"
                else:
                    raise RemoteProtocolError(f"expected hello, got {msg.TYPE}")
                if msg.protocol != m.PROTOCOL_VERSION:
                    raise RemoteProtocolError(
                        f"protocol version {msg.protocol} is not supported "
                        f"(this seeder speaks {m.PROTOCOL_VERSION})"
                    )
                return
            allowed: tuple[type[m.Message], ...] = (
                _PEER_SENDS if self.kind == "peer" else _CLI_SENDS
            )
        else:
            if self.kind is None:
                raise RemoteProtocolError(f"server sent {msg.TYPE} before our hello")
            allowed = _TO_PEER if self.kind == "peer" else _TO_CLI
        if not isinstance(msg, allowed):
            raise RemoteProtocolError(
                f"{msg.TYPE} is not allowed here (connection of a {self.kind})"
            )
