"""The join exchange, sans-IO: what a joining host and the seeder's join listener say.

A join connection carries exactly one request and its answer, then closes:

- ``Discover`` -> ``CaCert``: the host fetches the seeder's CA certificate, over TLS that it does
  not yet verify, and checks the CA against the pin in its token (``common.crypto.tokens``);
- ``JoinRequest`` -> ``Joined`` (host certificate, CA certificate, release-signing public key)
  or ``JoinRefused`` (a code and a reason): sent only on a second connection whose TLS
  certificate the host has verified against that CA, for the address it dialed.

:class:`JoinConnection` is the state machine for one side (bytes in, messages out, no sockets),
as :mod:`common.protocol` is for the control channel. Messages are msgpack maps like control
messages, with their own small size limit: the biggest is an answer with two certificates.
Errors say whose fault: :class:`LocalProtocolError` (ours) or :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final

import msgpack

from common.decoding import Decoder
from common.errors import LocalProtocolError, RemoteProtocolError, ShoalError
from common.messages import Message
from common.protocol import CLOSED, NEED_DATA, Event

JOIN_PROTOCOL = 1
MAX_JOIN_MESSAGE: Final = 64 * 1024
JOIN_PORT_OFFSET = 3  # the join listener's default port: the control port + 3 (7703)


@dataclass(frozen=True)
class Discover(Message):
    """Host -> seeder: send me your CA certificate (to be checked against my token's pin)."""

    TYPE: ClassVar[str] = "discover"
    protocol: int = JOIN_PROTOCOL


@dataclass(frozen=True)
class CaCert(Message):
    TYPE: ClassVar[str] = "ca_cert"
    ca_cert: bytes  # PEM


@dataclass(frozen=True)
class JoinRequest(Message):
    """Host -> seeder, over verified TLS: enroll me as ``name`` with this CSR."""

    TYPE: ClassVar[str] = "join"
    token_id: str
    secret: str
    name: str
    csr: bytes  # PEM; the key stays on the host
    labels: dict[str, str] = field(default_factory=dict)
    protocol: int = JOIN_PROTOCOL


@dataclass(frozen=True)
class Joined(Message):
    TYPE: ClassVar[str] = "joined"
    name: str
    host_cert: bytes  # PEM
    ca_cert: bytes  # PEM
    signing_key: bytes  # PEM: the release-signing public key
    labels: dict[str, str] = field(default_factory=dict)  # the host's labels, token's included


class RefusalCode(enum.StrEnum):
    BAD_TOKEN = "bad_token"  # unknown id or wrong secret: the same answer for both
    EXPIRED = "token_expired"
    USED_UP = "token_used_up"
    REVOKED = "token_revoked"
    NAME_REFUSED = "name_refused"  # not a valid host name, or outside the token's pattern
    NAME_TAKEN = "name_taken"  # a live (not revoked) host already has this name
    BAD_CSR = "bad_csr"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"  # too many failed joins from the host's address: wait
    INTERNAL = "internal"  # the seeder's fault


@dataclass(frozen=True)
class JoinRefused(Message):
    TYPE: ClassVar[str] = "join_refused"
    code: str
    reason: str


_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Discover, CaCert, JoinRequest, Joined, JoinRefused)
}
_DECODERS = {kind: Decoder(cls) for kind, cls in _TYPES.items()}
_ANSWERS: dict[type[Message], tuple[type[Message], ...]] = {
    Discover: (CaCert, JoinRefused),
    JoinRequest: (Joined, JoinRefused),
}


class JoinRole(enum.Enum):
    HOST = "host"  # dials, sends the request
    SEEDER = "seeder"  # listens, answers


class JoinState(enum.Enum):
    IDLE = "idle"  # host: nothing sent yet; seeder: waiting for the request
    ANSWERING = "answering"  # seeder: request received, answer not sent
    WAITING = "waiting"  # host: request sent, answer not received
    DONE = "done"  # one request, one answer: nothing more may be said


class JoinConnection:
    """One side of one join connection."""

    def __init__(self, role: JoinRole, *, max_message_size: int = MAX_JOIN_MESSAGE) -> None:
        self.role = role
        self.state = JoinState.IDLE
        self.request: Message | None = None
        self._max = max_message_size
        # msgpack's own limit is a little looser than ours: a safety net, not the rule
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=2 * max_message_size)
        self._eof = False
        self._pending = 0

    def send(self, msg: Message) -> bytes:
        if type(msg).TYPE not in _TYPES or _TYPES[type(msg).TYPE] is not type(msg):
            raise LocalProtocolError(f"{type(msg).__name__} is not a join message")
        if self.role is JoinRole.HOST:
            if self.state is not JoinState.IDLE or type(msg) not in _ANSWERS:
                raise LocalProtocolError(f"a joining host cannot send {msg.TYPE} now")
            self.request, self.state = msg, JoinState.WAITING
        else:
            if self.state is JoinState.IDLE and isinstance(msg, JoinRefused):
                pass  # refusing a request we could not read at all
            elif self.state is not JoinState.ANSWERING or not isinstance(msg, self._answers()):
                raise LocalProtocolError(f"the seeder cannot send {msg.TYPE} now")
            self.state = JoinState.DONE
        wire: dict[str, Any] = {"t": msg.TYPE}
        wire.update((f.name, getattr(msg, f.name)) for f in fields(msg))
        return msgpack.packb(wire, use_bin_type=True)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport; ``b""`` means the remote closed its side."""
        if self._eof:
            raise LocalProtocolError("received data after end of stream")
        if not data:
            self._eof = True
            return
        if self.state is JoinState.DONE or self.state is self._sending_state:
            raise RemoteProtocolError(
                f"unexpected data from the {self._remote} ({len(data)} bytes)"
            )
        if self._pending + len(data) > self._max:  # counted here: exact, whatever msgpack buffers
            raise RemoteProtocolError(
                f"the {self._remote}'s join message exceeds {self._max} bytes"
            )
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise RemoteProtocolError(
                f"the {self._remote}'s join message exceeds {self._max} bytes"
            ) from None
        self._pending += len(data)

    def next_event(self) -> Event:
        try:
            obj = self._unpacker.unpack()
        except msgpack.OutOfData:
            if not self._eof:
                return NEED_DATA
            if self._pending:
                raise RemoteProtocolError(
                    f"the {self._remote} closed the connection in the middle of a message"
                ) from None
            return CLOSED
        except (ValueError, msgpack.ExtraData, msgpack.StackError) as exc:
            raise RemoteProtocolError(
                f"undecodable join message from the {self._remote} ({type(exc).__name__})"
            ) from None
        self._pending = 0
        msg = self._decode(obj)
        if self.role is JoinRole.SEEDER:
            if self.state is not JoinState.IDLE or type(msg) not in _ANSWERS:
                raise RemoteProtocolError(f"a joining host may not send {msg.TYPE} here")
            if getattr(msg, "protocol", JOIN_PROTOCOL) != JOIN_PROTOCOL:
                raise RemoteProtocolError(
                    f"join protocol {getattr(msg, 'protocol', '?')} is not supported"
                    f" (this seeder speaks {JOIN_PROTOCOL})"
                )
            self.request, self.state = msg, JoinState.ANSWERING
        else:
            if self.state is not JoinState.WAITING or not isinstance(msg, self._answers()):
                raise RemoteProtocolError(f"the seeder sent {msg.TYPE}, which does not answer")
            self.state = JoinState.DONE
        return msg

    def _answers(self) -> tuple[type[Message], ...]:
        """What may answer the request of this connection."""
        return () if self.request is None else _ANSWERS[type(self.request)]

    @property
    def _remote(self) -> str:
        return "seeder" if self.role is JoinRole.HOST else "joining host"

    @property
    def _sending_state(self) -> JoinState:
        """The state in which it is our turn to speak (the remote must be quiet)."""
        return JoinState.ANSWERING if self.role is JoinRole.SEEDER else JoinState.IDLE

    def _decode(self, obj: object) -> Message:
        if not isinstance(obj, dict):
            raise RemoteProtocolError(f"join message must be a map, got {type(obj).__name__}")
        kind = obj.get("t")
        decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            raise RemoteProtocolError(f"unknown join message type {kind!r}")
        return decoder.decode(obj)


class JoinError(ShoalError):
    """A join that did not happen, with the refusal's code (see :class:`RefusalCode`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
