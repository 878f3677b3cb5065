"""Every message of the control channel, as typed records.

On the wire a message is a msgpack map ``{"t": <type>, <field>: <value>, ...}``. ``to_wire`` and
``from_wire`` convert; ``from_wire`` checks field names and types (:mod:`common.decoding`) so that
a malformed message is rejected at the edge (as a :class:`RemoteProtocolError`) instead of
failing deep inside a handler.

Roles: a *peer* daemon says :class:`Hello`; the operator CLI says :class:`ClientHello` and then
sends :class:`Request`s answered by :class:`Response`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from common.decoding import Decoder
from common.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 1

# The steps a step report can name, besides the appspec's lifecycle events and "Install".
STAGE_STEPS = ("download", "verify", "unpack")  # inside "stage"


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


# --- peer -> seeder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """First message of a peer: who it is and what it already has."""

    TYPE: ClassVar[str] = "hello"
    name: str
    address: str
    bt_port: int
    labels: dict[str, str] = field(default_factory=dict)
    current: str | None = None
    staged: list[str] = field(default_factory=list)
    protocol: int = PROTOCOL_VERSION
    version: str = ""  # the shoal version the peer runs (shoal hosts shows it)


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE: ClassVar[str] = "heartbeat"
    sent_at: float


@dataclass(frozen=True)
class StepReport(Message):
    """The durable result of one step on one host, keyed by (rollout, host, step, attempt).

    ``state`` is ``running``, ``succeeded`` or ``failed``; ``result`` is the typed outcome
    (``succeeded``, ``failed``, ``missing``, ``not_executable``, ``timed_out``, ``error``,
    ``skipped``); ``output`` holds the last lines a hook printed.
    """

    TYPE: ClassVar[str] = "step"
    rollout_id: str
    host: str
    step: str
    attempt: int
    state: str
    result: str = ""
    detail: str = ""
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)
    at: float = 0.0
    seq: int = 0


@dataclass(frozen=True)
class PreflightResult(Message):
    """A peer's answer to :class:`Preflight`: one ``{"check", "ok", "detail"}`` per check."""

    TYPE: ClassVar[str] = "preflight_result"
    check_id: str
    host: str
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Progress(Message):
    """How far a host's download of a rollout's release is (best effort, a few per second)."""

    TYPE: ClassVar[str] = "progress"
    rollout_id: str
    host: str
    done: int
    total: int
    rate: float = 0.0  # bytes per second, recent


@dataclass(frozen=True)
class Refused(Message):
    """A peer refused a command, e.g. one carrying an older rollout's fencing token."""

    TYPE: ClassVar[str] = "refused"
    rollout_id: str
    token: int
    reason: str


@dataclass(frozen=True)
class OutputLine(Message):
    """One line a hook printed, streamed live (best effort; the step report keeps the tail)."""

    TYPE: ClassVar[str] = "output"
    rollout_id: str
    host: str
    step: str
    line: str


# --- seeder -> peer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    heartbeat_interval: float
    tracker_key: str = ""  # this host's key for the seeder's tracker (seeder.announcekeys)


@dataclass(frozen=True)
class Stage(Message):
    """Download, verify and unpack a release; nothing goes live."""

    TYPE: ClassVar[str] = "stage"
    rollout_id: str
    manifest: dict[str, Any]
    torrent: bytes
    peers: list[list[Any]] = field(default_factory=list)
    slice: list[int] = field(default_factory=list)  # [index, count]: see common.pieces
    slice_seeds: list[list[Any]] = field(default_factory=list)  # [ip, port] of each slice seed
    token: int = 0  # the rollout's fencing token: a peer refuses tokens older than its newest
    # Ed25519 over common.crypto.signing.canonical_manifest(manifest) by the seeder's release key
    signature: bytes = b""


@dataclass(frozen=True)
class SwarmMembers(Message):
    """The BitTorrent addresses a host may trade a rollout's release with: the rollout's enrolled
    targets and the seeder. Sent before the rollout's Stage and again when it changes; a peer
    admits only these (libtorrent's IP filter) and ignores lists of older fencing tokens."""

    TYPE: ClassVar[str] = "swarm_members"
    rollout_id: str
    addresses: list[str]
    token: int = 0


@dataclass(frozen=True)
class Activate(Message):
    """Run the lifecycle hooks of a staged release and switch ``current`` to it."""

    TYPE: ClassVar[str] = "activate"
    rollout_id: str
    release_id: str
    attempt: int = 1
    token: int = 0  # the rollout's fencing token (see Stage)


@dataclass(frozen=True)
class Abort(Message):
    """Start nothing new for this rollout; with ``kill``, also kill its running hooks."""

    TYPE: ClassVar[str] = "abort"
    rollout_id: str
    token: int = 0
    kill: bool = False


@dataclass(frozen=True)
class Preflight(Message):
    """Check, changing nothing, whether this host could stage and activate a release.

    ``release`` is the manifest plus what the checks need from its appspec: ``hooks`` (a list of
    ``{"event", "location", "runas"}``) and ``files`` (a list of destination directories).
    """

    TYPE: ClassVar[str] = "preflight"
    check_id: str
    release: dict[str, Any]


@dataclass(frozen=True)
class Ack(Message):
    """The seeder stored a step report; the peer may drop it from its journal."""

    TYPE: ClassVar[str] = "ack"
    seq: int


# --- CLI <-> seeder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientHello(Message):
    TYPE: ClassVar[str] = "client_hello"
    client: str
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Request(Message):
    TYPE: ClassVar[str] = "request"
    id: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Response(Message):
    TYPE: ClassVar[str] = "response"
    id: int
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True)
class RolloutEvent(Message):
    """One entry of a rollout's event stream, pushed to a CLI that subscribed to it.

    A CLI subscribes with the request ``rollout.subscribe``; after its response the seeder sends
    ``RolloutEvent``s (``seq`` increasing per rollout) until the rollout ends or the client leaves.
    """

    TYPE: ClassVar[str] = "rollout_event"
    rollout_id: str
    seq: int
    at: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Goodbye(Message):
    """Sent before closing on purpose, with the reason (e.g. a protocol error)."""

    TYPE: ClassVar[str] = "goodbye"
    reason: str


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Heartbeat,
        StepReport,
        PreflightResult,
        Progress,
        Refused,
        OutputLine,
        Welcome,
        Stage,
        SwarmMembers,
        Activate,
        Abort,
        Preflight,
        Ack,
        ClientHello,
        Request,
        Response,
        RolloutEvent,
        Goodbye,
    )
}


def to_wire(msg: Message) -> dict[str, Any]:
    if type(msg).TYPE not in MESSAGE_TYPES:
        raise LocalProtocolError(f"{type(msg).__name__} is not a control message")
    wire: dict[str, Any] = {"t": msg.TYPE}
    for f in fields(msg):
        wire[f.name] = getattr(msg, f.name)
    return wire


def from_wire(obj: object) -> Message:
    """Build a message from a decoded msgpack object, or raise RemoteProtocolError."""
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"control message must be a map, got {type(obj).__name__}")
    kind = obj.get("t")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise RemoteProtocolError(f"unknown control message type {kind!r}")
    return decoder.decode(obj)


_DECODERS: dict[str, Decoder[Message]] = {kind: Decoder(cls) for kind, cls in MESSAGE_TYPES.items()}
