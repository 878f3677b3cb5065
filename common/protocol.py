"""The control protocol as a sans-IO state machine: bytes in, messages out, no sockets.

Modelled on h11. A :class:`Connection` is told its role (``CLIENT``: the side that dials, a peer
daemon or the CLI; ``SERVER``: the seeder). ``send(msg)`` checks the message is legal now and
returns the bytes to write; ``receive_data(data)`` takes bytes read from the transport (``b""``
for end of stream); ``next_event()`` returns the next complete message, ``NEED_DATA``, or
``CLOSED``.

Framing: every message is one frame, a 4-byte big-endian length followed by that many bytes of
one msgpack map. The length is checked against the connection's limit as soon as its 4 bytes
arrive, before any of the body is buffered, so a remote that announces a huge frame is refused
at once and never makes us hold more than the limit. The seeder's limits are small before the
client's hello (:data:`HELLO_FRAME_LIMIT`: nothing unauthenticated needs more) and after it
(:data:`FRAME_LIMIT`: peers and the CLI send reports and requests, all small). Clients accept
more from the seeder (:data:`CLIENT_FRAME_LIMIT`): its answers grow with the fleet, and the
largest message to a peer, a Stage with its torrent, with the release (``python -m
bench.frame_size``).

Errors say whose fault they are: :class:`LocalProtocolError` when our side breaks the rules,
:class:`RemoteProtocolError` when the bytes or messages received do.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

import msgpack

from common import messages as m
from common.errors import LocalProtocolError, RemoteProtocolError

KiB: Final = 1024
MiB: Final = 1024 * KiB
FRAME_LIMIT: Final = 8 * MiB
"""Largest frame the seeder accepts after the hello. Clients send step reports (at most 50
output lines of 4 KiB: ~200 KiB), preflight results and requests; 8 MiB is ample."""
HELLO_FRAME_LIMIT: Final = 16 * KiB
"""Largest frame before the hello: a Hello (name, address, labels, releases) is well under 4 KiB.
Small, because an unauthenticated connection may hold this much until its hello timeout: 4,096
of them (the connection cap) hold at most 64 MiB."""
CLIENT_FRAME_LIMIT: Final = 64 * MiB
"""Largest frame a peer or CLI accepts from the seeder. A Stage carries the torrent: 124,419
bytes for a 10 GB release (hybrid v1+v2, 4 MiB pieces; a 125,557-byte frame), about 13 KB more
per further GB (bench/frame_size.py). ``rollout status`` of 2,000 hosts is about 3.3 MB
(bench/control_plane.py), so 64 MiB leaves room for tens of thousands of hosts."""
HEADER: Final = struct.Struct(">I")
# The msgpack map bytes an old, unframed client starts with (fixmap, map16, map32).
_UNFRAMED_START: Final = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


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

    def __init__(
        self,
        role: Role,
        *,
        max_frame: int | None = None,
        max_hello_frame: int = HELLO_FRAME_LIMIT,
        max_send: int | None = None,
    ) -> None:
        """``max_frame`` bounds every frame received after the hello (default: FRAME_LIMIT for
        the server, CLIENT_FRAME_LIMIT for a client); ``max_hello_frame`` what a server accepts
        before it (a client receives nothing before its hello); ``max_send`` what we send,
        the remote's limit (default: the other role's ``max_frame``)."""
        to_server, to_client = FRAME_LIMIT, CLIENT_FRAME_LIMIT
        if max_frame is None:
            max_frame = to_server if role is Role.SERVER else to_client
        if not 0 < max_hello_frame <= max_frame:
            raise ValueError(f"frame limits {max_hello_frame} / {max_frame} are not 0 < a <= b")
        self.role = role
        self.kind: str | None = None  # "peer" or "cli", known after the hello
        self.closed = False
        self.max_frame = max_frame
        self.max_hello_frame = max_hello_frame
        self.max_send = max_send or (to_client if role is Role.SERVER else to_server)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._buffer = bytearray()
        self._frame: int | None = None  # body length of the frame being received, once known
        self._eof = False
        self._received = 0  # frames decoded so far

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
        body = self._packer.pack(m.to_wire(msg))
        if len(body) > self.max_send:  # the remote would refuse it: say so here, clearly
            raise LocalProtocolError(
                f"{msg.TYPE} is {len(body)} bytes, over the {self.max_send}-byte frame limit"
            )
        if isinstance(msg, m.Goodbye):
            self.closed = True
        return frame(body)

    # --- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport; ``b""`` means the remote closed its side.

        Buffers at most one frame beyond what the caller has read: call :meth:`next_event`
        until it says NEED_DATA before feeding more."""
        if self._eof:
            raise LocalProtocolError("received data after end of stream")
        if not data:
            self._eof = True
            return
        self._buffer += data

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return len(self._buffer)

    @property
    def frame_limit(self) -> int:
        """The largest frame this side accepts now (smaller before the client's hello)."""
        waiting_hello = self.role is Role.SERVER and self.kind is None
        return self.max_hello_frame if waiting_hello else self.max_frame

    def next_event(self) -> Event:
        if self._frame is None and len(self._buffer) >= HEADER.size:
            self._frame = self._frame_length()
        if self._frame is None or len(self._buffer) < HEADER.size + self._frame:
            if not self._eof:
                return NEED_DATA
            if self._buffer:
                raise RemoteProtocolError(
                    f"connection closed in the middle of a message ({len(self._buffer)} bytes)"
                )
            self.closed = True
            return CLOSED
        end = HEADER.size + self._frame
        body = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        self._frame = None
        msg = m.from_wire(_decode(body))
        self._check_incoming(msg)
        self._received += 1
        if isinstance(msg, m.Goodbye):
            self.closed = True
        return msg

    def _frame_length(self) -> int:
        """The announced body length of the next frame, refused at once if over the limit."""
        if self._received == 0 and self._buffer[0] in _UNFRAMED_START:
            raise RemoteProtocolError(
                "unframed control message: the remote speaks an older shoal protocol "
                "(upgrade it to this version)"
            )
        (length,) = HEADER.unpack_from(self._buffer)
        limit = self.frame_limit
        if length > limit:
            when = " before the hello" if self.role is Role.SERVER and self.kind is None else ""
            raise RemoteProtocolError(
                f"control message of {length} bytes exceeds the {limit}-byte frame limit{when}"
            )
        if length == 0:
            raise RemoteProtocolError("empty control frame")
        return int(length)

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


def frame(body: bytes) -> bytes:
    """``body`` as one frame on the wire: its 4-byte big-endian length, then the bytes."""
    return HEADER.pack(len(body)) + body


def _decode(body: bytes) -> object:
    """One msgpack object filling the whole frame, or RemoteProtocolError."""
    try:
        return msgpack.unpackb(body, raw=False, ext_hook=_no_extensions)
    except msgpack.ExtraData:
        raise RemoteProtocolError("undecodable control message (bytes after the message)") from None
    except (ValueError, TypeError, msgpack.StackError, msgpack.FormatError) as exc:
        # ValueError covers msgpack's truncated data and bad bytes; TypeError unhashable keys.
        raise RemoteProtocolError(
            f"undecodable control message ({type(exc).__name__}: {str(exc) or 'bad bytes'})"
        ) from None


def _no_extensions(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack extension type {code} is not part of the control protocol")
