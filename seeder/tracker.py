"""The embedded BitTorrent tracker: HTTP announce (BEP 3, compact BEP 23) and scrape (BEP 48).

libtorrent ships no tracker server, and the releases are private torrents (no DHT, PEX or LSD), so
the seeder runs this one to tell every peer about the others. It is split the way h11 is:

* :class:`~seeder.swarms.Swarms` is the pure state: who is in which swarm, who has expired, whom
  to hand out. It takes ``now`` as an argument and does no IO.
* :class:`Tracker` is the IO shell: a trio TCP server that speaks HTTP through ``h11``, turns a
  ``GET /announce?...`` into one :meth:`Swarms.announce` call (``GET /scrape?...`` into one
  :meth:`Swarms.scrape`) and bencodes the answer.

libtorrent announces a v2-only torrent under its SHA-256 info-hash truncated to 20 bytes, and a
hybrid torrent twice (v1 hash and truncated v2 hash), so the tracker sees two swarms for one
hybrid release; it does not care what the 20 bytes mean. v1-only clients (aria2, Transmission)
announce the v1 hash and meet libtorrent peers there.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import urllib.parse
from collections.abc import Callable

import h11
import trio

from common.ratelog import RateLog
from common.torrent import Bencodable, bencode
from seeder.admission import Admission, Limits
from seeder.swarms import DEFAULT_INTERVAL, EXPIRY_INTERVALS, Addr, SwarmFull, Swarms

log = logging.getLogger(__name__)

DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200  # what libtorrent asks for by default; more only makes the response bigger
EVENTS = frozenset({"", "started", "completed", "stopped", "paused"})
MAX_REQUEST_HEAD = 8 * 1024  # an announce line from libtorrent is ~400 bytes
MAX_QUERY_FIELDS = 64
MAX_SCRAPE_HASHES = 50  # info_hash fields one scrape may ask for
RECEIVE_SIZE = 4096
MAX_PER_ADDRESS = 64  # a host's libtorrent keeps one connection (or a few, briefly)
MAX_NUMBER_DIGITS = 20  # port, left, numwant... no real value needs more digits


class AnnounceRejected(Exception):
    """The announce is not acceptable; the message goes back as ``failure reason``."""


# (requester ip, its tracker key or None) -> why it is refused, or None to answer it
AnnounceCheck = Callable[[str, str | None], str | None]


class Tracker:
    """HTTP tracker serving ``GET /announce`` and ``GET /scrape`` from :class:`Swarms`.

    ``interval`` is what clients are told to wait between announces and ``min_interval`` the
    least they must wait (default a quarter of it); a :class:`Swarms` created here forgets a peer
    after ``EXPIRY_INTERVALS`` intervals without an announce, and treats ``origins`` (the
    seeder's full seeds) as described there. ``origin_ok(ip)`` says whether a requester may be
    handed an origin. ``clock`` gives ``now`` for the swarms (``trio.current_time``, so the
    autojump clock works in tests). Each connection gets one task, at most ``max_connections``
    at once and ``max_per_address`` from one IP (further ones are closed at once, counted in a
    rate-limited log); each request must arrive and be answered within ``timeout`` seconds
    (idle keep-alive included), so a slow client can't hold a task forever. ``admit`` decides
    who is answered at all (announce and scrape; see :mod:`seeder.announcekeys`); without it,
    anyone.
    """

    def __init__(
        self,
        swarms: Swarms | None = None,
        *,
        interval: int = DEFAULT_INTERVAL,
        min_interval: int | None = None,
        origins: frozenset[Addr] = frozenset(),
        origin_ok: Callable[[str], bool] = lambda ip: True,
        clock: Callable[[], float] = trio.current_time,
        timeout: float = 10.0,
        max_connections: int = 1024,
        max_per_address: int = MAX_PER_ADDRESS,
        admit: AnnounceCheck | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"tracker interval {interval} must be at least 1 second")
        self.swarms = (
            swarms
            if swarms is not None
            else Swarms(ttl=EXPIRY_INTERVALS * interval, origins=origins)
        )
        self.interval = interval
        self.min_interval = min_interval if min_interval is not None else max(1, interval // 4)
        self.timeout = timeout
        self._origin_ok = origin_ok
        self._admit = admit
        self._clock = clock
        self._admission = Admission(
            Limits(max_connections=max_connections, max_per_address=max_per_address),
            options=False,
        )
        self._refusals = RateLog(log)
        self._announced = trio.Event()  # set (and replaced) after every accepted announce

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` (0 = ephemeral), report the bound port, serve until cancelled.

        OSError if the address cannot be bound (taken, or not this host's)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0:  # several addresses would each get a different port: keep one
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        actual_port: int = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refusals.run)
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            log.info("tracker listening on %s:%d", host, actual_port)
            task_status.started(actual_port)

    def swarm_peers(self, info_hash: bytes) -> list[Addr]:
        """The live peers of one swarm, sorted (diagnostics)."""
        return self.swarms.peers(info_hash, self._clock())

    async def wait_listed(self, addr: Addr, info_hashes: list[bytes]) -> None:
        """Return once every swarm of ``info_hashes`` lists ``addr`` (woken by announces)."""
        while True:
            announced = self._announced
            if all(addr in self.swarm_peers(ih) for ih in info_hashes):
                return
            await announced.wait()

    def respond(self, ip: str, target: bytes) -> tuple[int, bytes]:
        """Answer one GET for ``target`` from ``ip``: (HTTP status, body). No IO."""
        try:
            parts = urllib.parse.urlsplit(target.decode("latin-1"))
        except ValueError:  # e.g. "//[" (an unclosed IPv6 host)
            return 400, b"bad request target\n"
        if parts.path not in ("/announce", "/scrape"):
            return 404, b"not found\n"
        try:
            fields = urllib.parse.parse_qsl(
                parts.query,
                encoding="latin-1",
                keep_blank_values=True,
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError:
            return 200, bencode({b"failure reason": "too many query fields"})
        if self._admit is not None:
            refused = self._admit(ip, dict(fields).get("hk"))
            if refused is not None:
                return 200, bencode({b"failure reason": refused})
        try:
            if parts.path == "/scrape":
                body = self._scrape(fields)
            else:
                body = self._announce(ip, dict(fields))
        except AnnounceRejected as exc:
            body = bencode({b"failure reason": str(exc)})
        return 200, body

    def _announce(self, ip: str, fields: dict[str, str]) -> bytes:
        info_hash = _hash_field(fields.get("info_hash", ""))
        peer_id = fields.get("peer_id", "").encode("latin-1")
        if len(peer_id) != 20:
            raise AnnounceRejected("missing or invalid peer_id (need 20 bytes)")
        port = _int_field(fields, "port", None, 1, 65535)
        left = _int_field(fields, "left", 1, 0, None)  # unknown: assume it still needs pieces
        numwant = min(_int_field(fields, "numwant", DEFAULT_NUMWANT, 0, None), MAX_NUMWANT)
        event = fields.get("event", "")
        if event not in EVENTS:
            raise AnnounceRejected(f"invalid event {event[:40]!r}")
        now = self._clock()
        try:
            peers = self.swarms.announce(
                info_hash,
                ip,
                port,
                event,
                left,
                numwant,
                now,
                peer_id=peer_id,
                origin_ok=self._origin_ok(ip),
            )
        except SwarmFull as exc:
            raise AnnounceRejected(str(exc)) from None
        self._announced.set()
        self._announced = trio.Event()
        complete, incomplete = self.swarms.counts(info_hash, now)
        response: dict[bytes, Bencodable] = {
            b"interval": self.interval,
            b"min interval": self.min_interval,
            b"complete": complete,
            b"incomplete": incomplete,
        }
        if fields.get("compact", "1") == "0":
            with_ids = fields.get("no_peer_id", "0") != "1"
            response[b"peers"] = [
                _peer_dict(peer_ip, p, self.swarms.peer_id(info_hash, (peer_ip, p)), with_ids)
                for peer_ip, p in peers
            ]
        else:
            v4, v6 = _compact(peers)
            response[b"peers"] = v4
            if v6:
                response[b"peers6"] = v6
        return bencode(response)

    def _scrape(self, fields: list[tuple[str, str]]) -> bytes:
        """BEP 48: ``files`` maps each known info_hash asked for (all, if none) to its figures."""
        wanted = [_hash_field(value) for key, value in fields if key == "info_hash"]
        if len(wanted) > MAX_SCRAPE_HASHES:
            raise AnnounceRejected(f"too many info_hash fields (at most {MAX_SCRAPE_HASHES})")
        stats = self.swarms.scrape(wanted, self._clock())
        files: dict[bytes, Bencodable] = {
            ih: {b"complete": s.complete, b"incomplete": s.incomplete, b"downloaded": s.downloaded}
            for ih, s in stats.items()
        }
        return bencode({b"files": files, b"flags": {b"min_request_interval": self.min_interval}})

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One client connection, admitted under the caps."""
        try:
            ip = _normalise_ip(stream.socket.getpeername()[0])
        except OSError:  # gone before we looked
            await trio.aclose_forcefully(stream)
            return
        refused = self._admission.open(ip)
        if refused is not None:
            self._refusals.event("tracker refused", ip, refused)
            await trio.aclose_forcefully(stream)
            return
        try:
            await self.serve_stream(stream, ip)
        finally:
            self._admission.close(ip)

    async def serve_stream(self, stream: trio.abc.Stream, ip: str) -> None:
        """Requests in, responses out, until close, error or timeout; then close ``stream``."""
        try:
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
            await trio.aclose_forcefully(stream)

    async def _one_request(self, stream: trio.abc.Stream, conn: h11.Connection, ip: str) -> bool:
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
    stream: trio.abc.Stream, conn: h11.Connection, status: int, body: bytes, *, close: bool
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


def _hash_field(text: str) -> bytes:
    info_hash = text.encode("latin-1")
    if len(info_hash) != 20:
        raise AnnounceRejected("missing or invalid info_hash (need 20 bytes)")
    return info_hash


def _peer_dict(ip: str, port: int, peer_id: bytes, with_id: bool) -> Bencodable:
    """One entry of a non-compact peer list (BEP 3), with its ``peer id`` unless declined."""
    entry: dict[bytes, Bencodable] = {b"ip": ip, b"port": port}
    if with_id:
        entry[b"peer id"] = peer_id
    return entry


def _int_field(
    fields: dict[str, str], name: str, default: int | None, low: int, high: int | None
) -> int:
    text = fields.get(name)
    if text is None:
        if default is None:
            raise AnnounceRejected(f"missing {name}")
        return default
    digits = text[1:] if text.startswith("-") else text
    # int() alone would take " 5", "5_0" and thousands of digits; a tracker number is plain.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_NUMBER_DIGITS:
        raise AnnounceRejected(f"invalid {name} {text[:40]!r}")
    value = int(text, 10)
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
