"""Every message of the control channel, as typed records.

On the wire a message is a msgpack map ``{"t": <type>, <field>: <value>, ...}``. ``to_wire`` and
``from_wire`` convert; ``from_wire`` checks field names and types so that a malformed message is
rejected at the edge (as a :class:`RemoteProtocolError`) instead of failing deep inside a handler.

Roles: a *peer* daemon says :class:`Hello`; the operator CLI says :class:`ClientHello` and then
sends :class:`Request`s answered by :class:`Response`s.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Final, Union

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


# --- validation: one precompiled decoder per message class ------------------------------------
#
# Each field's type hint is compiled once, at import, into a predicate (or ``None`` for ``Any``,
# which accepts everything). The rules: ``int`` rejects ``bool``; ``float`` accepts ``int`` but
# not ``bool``; ``list[X]`` and ``dict[K, V]`` check every element; ``X | None`` accepts ``None``;
# any other class is an ``isinstance`` check.

Check = Callable[[object], bool]
_MISSING: Final = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_none(value: object) -> bool:
    return value is None


def compile_check(hint: Any) -> Check | None:
    """The predicate a value of type ``hint`` must pass; ``None`` if anything goes (``Any``)."""
    if hint is Any:
        return None
    if hint is type(None):
        return _is_none
    if hint is int:
        return _is_int
    if hint is float:
        return _is_float
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        alternatives = [compile_check(arg) for arg in args]
        if any(alt is None for alt in alternatives):
            return None  # X | Any is Any
        checks = [alt for alt in alternatives if alt is not None]
        if len(checks) == 2 and type(None) in args:  # Optional[X]: the common case, made cheap
            (other,) = [compile_check(arg) for arg in args if arg is not type(None)]
            assert other is not None

            def optional(value: object) -> bool:
                return value is None or other(value)

            return optional

        def union(value: object) -> bool:
            return any(check(value) for check in checks)

        return union
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        item = compile_check(item_hint)
        if item is None:
            return _instance_of(list)
        if item_hint is str:  # list[str]: the hot case (a step report's output lines)

            def list_of_str(value: object) -> bool:
                return isinstance(value, list) and all(isinstance(v, str) for v in value)

            return list_of_str

        def list_of(value: object) -> bool:
            return isinstance(value, list) and all(item(v) for v in value)

        return list_of
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        key = compile_check(key_hint)
        val = compile_check(value_hint)
        if key is None and val is None:
            return _instance_of(dict)
        if val is None:
            assert key is not None
            if key_hint is str:

                def dict_str_any(value: object) -> bool:
                    return isinstance(value, dict) and all(isinstance(k, str) for k in value)

                return dict_str_any

            def dict_keys(value: object) -> bool:
                return isinstance(value, dict) and all(key(k) for k in value)

            return dict_keys

        def dict_of(value: object) -> bool:
            return isinstance(value, dict) and all(
                (key is None or key(k)) and val(v) for k, v in value.items()
            )

        return dict_of
    if isinstance(hint, type):
        return _instance_of(hint)
    raise TypeError(f"no validator for the type hint {hint!r}")


def _instance_of(cls: type) -> Check:
    def check(value: object) -> bool:
        return isinstance(value, cls)

    return check


class Decoder:
    """Builds one message class from a wire map, checking every field it carries.

    Compiled once from the dataclass's fields. The instance is made without calling the frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) but to the same result: every
    field set, a missing one from its default or a fresh ``default_factory()``.
    """

    __slots__ = ("cls", "fields", "kind")

    def __init__(self, cls: type[Message]) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.kind = cls.TYPE
        # (name, check or None, default or _MISSING, default_factory or None)
        self.fields: tuple[tuple[str, Check | None, object, Callable[[], Any] | None], ...] = tuple(
            (
                f.name,
                compile_check(hints[f.name]),
                f.default if f.default is not MISSING else _MISSING,
                f.default_factory if f.default_factory is not MISSING else None,
            )
            for f in fields(cls)
        )

    def decode(self, obj: dict[Any, Any]) -> Message:
        values: dict[str, Any] = {}
        complete = True
        for name, check, default, factory in self.fields:
            value = obj.get(name, _MISSING)
            if value is _MISSING:
                if factory is not None:
                    value = factory()
                elif default is _MISSING:
                    complete = False  # reported after every present field was checked
                else:
                    value = default
            elif check is not None and not check(value):
                raise RemoteProtocolError(
                    f"{self.kind} message: field {name!r} has the wrong type "
                    f"({type(value).__name__})"
                )
            values[name] = value
        if not complete:
            missing = [f[0] for f in self.fields if f[0] not in obj]
            raise RemoteProtocolError(f"{self.kind} message is missing fields {missing}")
        msg = self.cls.__new__(self.cls)
        msg.__dict__.update(values)
        return msg


_DECODERS: dict[str, Decoder] = {kind: Decoder(cls) for kind, cls in MESSAGE_TYPES.items()}
