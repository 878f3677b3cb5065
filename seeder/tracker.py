"""The embedded BitTorrent tracker: HTTP announce (BEP 3) with compact peer lists (BEP 23).

libtorrent ships no tracker server, and the releases are private torrents (no DHT, PEX or LSD), so
the seeder runs this one to tell every peer about the others. It is split the way h11 is:

* :class:`Swarms` is the pure state: who is in which swarm, who has expired, whom to hand out. It
  takes ``now`` as an argument and does no IO, so it is tested without sockets or sleeps.
* :class:`Tracker` is the IO shell: a trio TCP server that speaks HTTP through ``h11``, turns a
  ``GET /announce?...`` into one :meth:`Swarms.announce` call and bencodes the answer.

libtorrent announces a v2-only torrent under its SHA-256 info-hash truncated to 20 bytes, and a
hybrid torrent twice (v1 hash and truncated v2 hash), so the tracker may see two swarms for one
release; it does not care what the 20 bytes mean.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import struct
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import h11
import trio

log = logging.getLogger(__name__)

Addr: TypeAlias = tuple[str, int]
Bencodable: TypeAlias = "int | bytes | str | list[Bencodable] | dict[bytes, Bencodable]"

DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200  # what libtorrent asks for by default; more only makes the response bigger
EVENTS = frozenset({"", "started", "completed", "stopped", "paused"})
MAX_REQUEST_HEAD = 8 * 1024  # an announce line from libtorrent is ~400 bytes
MAX_QUERY_FIELDS = 64
RECEIVE_SIZE = 4096


class SwarmFull(Exception):
    """An announce would grow the tracker beyond its limits; the client is told to go away."""


@dataclass(slots=True)
class PeerEntry:
    """What the tracker remembers about one peer: bytes still missing, time of last announce."""

    left: int
    last_seen: float


class Swarms:
    """Pure swarm state: info_hash → {(ip, port): PeerEntry}. No clock reads, no IO.

    A peer is forgotten ``ttl`` seconds after its last announce (crashed hosts don't announce
    ``stopped``), and at once when it announces ``stopped``.

    Handout policy (:meth:`announce`): the requester never gets itself. A *seed* (``left == 0``)
    gets only peers that still need pieces, because two seeds have nothing to trade (libtorrent
    drops seed-to-seed connections anyway). A *leecher* gets a mix: up to ``seed_share`` of its
    ``numwant`` are seeds (at least one when any exists, so it can always finish) and the rest
    are other leechers, so that leechers trade pieces among themselves and the central seeder
    uploads each piece about once instead of once per host. If one kind runs short the other
    fills the gap. Within each kind the choice is random, to spread load over all seeds and to
    give every host a different neighbourhood; pass a seeded ``rng`` for reproducible tests.
    """

    def __init__(
        self,
        *,
        ttl: float = 15.0,
        seed_share: float = 0.5,
        max_swarms: int = 10_000,
        max_peers_per_swarm: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.ttl = ttl
        self.seed_share = seed_share
        self.max_swarms = max_swarms
        self.max_peers_per_swarm = max_peers_per_swarm
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, dict[Addr, PeerEntry]] = {}
        self._last_sweep: float | None = None

    def announce(
        self,
        info_hash: bytes,
        ip: str,
        port: int,
        event: str,
        left: int,
        numwant: int,
        now: float,
    ) -> list[Addr]:
        """Record one announce and return up to ``numwant`` other peers (see the class policy).

        Raises :class:`SwarmFull` when a new swarm or a new peer would exceed the limits.
        """
        self._maybe_sweep(now)
        me = (ip, port)
        swarm = self._live(info_hash, now)
        if event == "stopped":
            swarm.pop(me, None)
            self._drop_if_empty(info_hash)
            return []
        if me not in swarm:
            if info_hash not in self._swarms and len(self._swarms) >= self.max_swarms:
                raise SwarmFull("too many swarms")
            if len(swarm) >= self.max_peers_per_swarm:
                raise SwarmFull("swarm is full")
        swarm[me] = PeerEntry(left=left, last_seen=now)
        self._swarms[info_hash] = swarm
        return self._select(swarm, me, left, numwant)

    def __len__(self) -> int:
        """Number of swarms currently tracked (expired ones may linger until the next sweep)."""
        return len(self._swarms)

    def peers(self, info_hash: bytes, now: float) -> list[Addr]:
        """Every live peer of one swarm, sorted (diagnostics and tests)."""
        return sorted(self._live(info_hash, now))

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int]:
        """(complete, incomplete): live seeds and live leechers of one swarm."""
        swarm = self._live(info_hash, now)
        seeds = sum(1 for entry in swarm.values() if entry.left == 0)
        return seeds, len(swarm) - seeds

    def expire(self, now: float) -> None:
        """Forget every peer older than ``ttl`` and every swarm left empty."""
        for info_hash in list(self._swarms):
            self._live(info_hash, now)
            self._drop_if_empty(info_hash)
        self._last_sweep = now

    def _maybe_sweep(self, now: float) -> None:
        # Swarms nobody announces to any more are only dropped by a full sweep; doing one at
        # most once per ttl keeps the cost amortised without a timer task.
        if self._last_sweep is None:
            self._last_sweep = now
        elif now - self._last_sweep >= self.ttl:
            self.expire(now)

    def _live(self, info_hash: bytes, now: float) -> dict[Addr, PeerEntry]:
        """The swarm with expired peers removed (an empty, unregistered dict if unknown)."""
        swarm = self._swarms.get(info_hash, {})
        for addr in [a for a, e in swarm.items() if now - e.last_seen > self.ttl]:
            del swarm[addr]
        return swarm

    def _drop_if_empty(self, info_hash: bytes) -> None:
        if info_hash in self._swarms and not self._swarms[info_hash]:
            del self._swarms[info_hash]

    def _select(
        self, swarm: dict[Addr, PeerEntry], me: Addr, left: int, numwant: int
    ) -> list[Addr]:
        if numwant <= 0:
            return []
        seeds = [a for a, e in swarm.items() if e.left == 0 and a != me]
        leechers = [a for a, e in swarm.items() if e.left != 0 and a != me]
        if left == 0:
            return self._sample(leechers, numwant)
        seed_quota = min(len(seeds), max(1, int(numwant * self.seed_share)))
        chosen_leechers = self._sample(leechers, numwant - seed_quota)
        chosen_seeds = self._sample(seeds, numwant - len(chosen_leechers))
        return chosen_seeds + chosen_leechers

    def _sample(self, pool: list[Addr], k: int) -> list[Addr]:
        return self._rng.sample(pool, min(k, len(pool))) if k > 0 else []


class AnnounceRejected(Exception):
    """The announce is not acceptable; the message goes back as ``failure reason``."""


class Tracker:
    """HTTP tracker serving ``GET /announce`` from a :class:`Swarms`, over trio and h11.

    ``interval`` is what clients are told to wait between announces; a :class:`Swarms` created
    here forgets a peer after three missed intervals. ``clock`` gives ``now`` for the swarms
    (``trio.current_time``, so the autojump clock works in tests). Each connection gets one task,
    at most ``max_connections`` at once; each request must arrive and be answered within
    ``timeout`` seconds (idle keep-alive included), so a slow client can't hold a task forever.
    """

    def __init__(
        self,
        swarms: Swarms | None = None,
        *,
        interval: int = 5,
        clock: Callable[[], float] = trio.current_time,
        timeout: float = 10.0,
        max_connections: int = 1024,
    ) -> None:
        self.swarms = swarms if swarms is not None else Swarms(ttl=3.0 * interval)
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._limiter = trio.CapacityLimiter(max_connections)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` (0 = ephemeral), report the bound port, serve until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0:  # several addresses would each get a different port: keep one
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        actual_port: int = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            log.info("tracker listening on %s:%d", host, actual_port)
            task_status.started(actual_port)

    def swarm_peers(self, info_hash: bytes) -> list[Addr]:
        """The live peers of one swarm, sorted (diagnostics)."""
        return self.swarms.peers(info_hash, self._clock())

    def respond(self, ip: str, target: bytes) -> tuple[int, bytes]:
        """Answer one GET for ``target`` from ``ip``: (HTTP status, body). No IO."""
        parts = urllib.parse.urlsplit(target.decode("latin-1"))
        if parts.path != "/announce":
            return 404, b"not found\n"
        try:
            body = self._announce(ip, parts.query)
        except AnnounceRejected as exc:
            body = bencode({b"failure reason": str(exc)})
        return 200, body

    def _announce(self, ip: str, query: str) -> bytes:
        try:
            fields = dict(
                urllib.parse.parse_qsl(
                    query,
                    encoding="latin-1",
                    keep_blank_values=True,
                    max_num_fields=MAX_QUERY_FIELDS,
                )
            )
        except ValueError:
            raise AnnounceRejected("too many query fields") from None
        info_hash = fields.get("info_hash", "").encode("latin-1")
        if len(info_hash) != 20:
            raise AnnounceRejected("missing or invalid info_hash (need 20 bytes)")
        port = _int_field(fields, "port", None, 1, 65535)
        left = _int_field(fields, "left", 1, 0, None)  # unknown: assume it still needs pieces
        numwant = min(_int_field(fields, "numwant", DEFAULT_NUMWANT, 0, None), MAX_NUMWANT)
        event = fields.get("event", "")
        if event not in EVENTS:
            raise AnnounceRejected(f"invalid event {event!r}")
        now = self._clock()
        try:
            peers = self.swarms.announce(info_hash, ip, port, event, left, numwant, now)
        except SwarmFull as exc:
            raise AnnounceRejected(str(exc)) from None
        complete, incomplete = self.swarms.counts(info_hash, now)
        response: dict[bytes, Bencodable] = {
            b"interval": self.interval,
            b"min interval": self.interval,
            b"complete": complete,
            b"incomplete": incomplete,
        }
        if fields.get("compact", "1") == "0":
            response[b"peers"] = [{b"ip": peer_ip, b"port": p} for peer_ip, p in peers]
        else:
            v4, v6 = _compact(peers)
            response[b"peers"] = v4
            if v6:
                response[b"peers6"] = v6
        return bencode(response)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One client connection: requests in, responses out, until close, error or timeout."""
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            ip = _normalise_ip(stream.socket.getpeername()[0])
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
            keep_alive = True
            while keep_alive:
                keep_alive = False  # stays False if the request times out
                with trio.move_on_after(self.timeout):
                    keep_alive = await self._one_request(stream, conn, ip)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("tracker: unexpected error on a connection")
        finally:
            self._limiter.release()
            await trio.aclose_forcefully(stream)

    async def _one_request(self, stream: trio.SocketStream, conn: h11.Connection, ip: str) -> bool:
        """Read one request and answer it; True if the connection may carry another one."""
        request: h11.Request | None = None
        body_size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(stream, conn, exc.error_status_hint, b"bad request\n", close=True)
                return False
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body_size += len(event.data)
                if body_size > MAX_REQUEST_HEAD:  # a GET has no business with a big body
                    await _send(stream, conn, 413, b"request too large\n", close=True)
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed, or PAUSED (cannot happen before EndOfMessage)
                return False
        assert request is not None
        if request.method != b"GET":
            await _send(stream, conn, 405, b"only GET\n", close=True)
            return False
        status, body = self.respond(ip, request.target)
        await _send(stream, conn, status, body, close=False)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes, *, close: bool
) -> None:
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Server", "shoal-tracker"),
    ]
    if close:
        headers.append(("Connection", "close"))
    chunks = [
        conn.send(h11.Response(status_code=status, headers=headers)),
        conn.send(h11.Data(data=body)),
        conn.send(h11.EndOfMessage()),
    ]
    await stream.send_all(b"".join(chunk for chunk in chunks if chunk))


def _int_field(
    fields: dict[str, str], name: str, default: int | None, low: int, high: int | None
) -> int:
    text = fields.get(name)
    if text is None:
        if default is None:
            raise AnnounceRejected(f"missing {name}")
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise AnnounceRejected(f"invalid {name} {text!r}") from None
    if value < low or (high is not None and value > high):
        raise AnnounceRejected(f"{name} {value} out of range")
    return value


def _normalise_ip(text: str) -> str:
    """Canonical text of a socket address; IPv4-mapped IPv6 (dual-stack sockets) becomes IPv4."""
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def _compact(peers: list[Addr]) -> tuple[bytes, bytes]:
    """BEP 23 ``peers`` (4-byte IPv4 + port) and BEP 7 ``peers6`` (16-byte IPv6 + port)."""
    v4, v6 = bytearray(), bytearray()
    for ip, port in peers:
        packed = ipaddress.ip_address(ip).packed
        (v4 if len(packed) == 4 else v6).extend(packed + struct.pack(">H", port))
    return bytes(v4), bytes(v6)


def bencode(value: Bencodable) -> bytes:
    """Bencode ints, strings (UTF-8), bytes, lists and dicts with bytes keys (sorted, per BEP 3).

    Only an encoder: shoal never parses bencoding itself (libtorrent does that).
    """
    out: list[bytes] = []
    _bencode_into(value, out)
    return b"".join(out)


def _bencode_into(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out += [b"%d:" % len(raw), raw]
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _bencode_into(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            _bencode_into(key, out)
            _bencode_into(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
