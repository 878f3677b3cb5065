"""Tests for seeder.tracker: the pure Swarms logic, the HTTP shell over real loopback sockets, and
one end-to-end check with real libtorrent sessions announcing to it."""

from __future__ import annotations

import contextlib
import os
import random
import struct
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import libtorrent as lt
import pytest
import trio

from common.errors import TorrentError
from common.torrent import (
    Bencodable,
    TorrentSession,
    bdecode,
    bencode,
    datacenter_settings,
    make_torrent,
    tracker_hashes,
)
from seeder.swarms import DEFAULT_INTERVAL, SwarmFull, Swarms
from seeder.tracker import Tracker

IH = bytes(range(20))
OTHER = b"\xff" * 20
TIMEOUT = 10


def _bdecode(body: bytes) -> Any:
    """Decode with libtorrent's own bdecoder: an independent check of ours."""
    return lt.bdecode(body)


def test_announce_registers_and_excludes_self() -> None:
    swarms = Swarms()
    assert swarms.announce(IH, "10.0.0.1", 6881, "started", 100, 50, now=0) == []
    assert swarms.announce(IH, "10.0.0.2", 6881, "started", 100, 50, now=1) == [("10.0.0.1", 6881)]
    # same IP, other port is another peer; the requester itself is never handed out
    got = swarms.announce(IH, "10.0.0.1", 6882, "", 100, 50, now=2)
    assert sorted(got) == [("10.0.0.1", 6881), ("10.0.0.2", 6881)]
    assert swarms.peers(OTHER, now=2) == []


def test_stopped_removes_peer_and_empty_swarm() -> None:
    swarms = Swarms()
    swarms.announce(IH, "10.0.0.1", 1, "started", 5, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 2, "started", 5, 50, now=0)
    assert swarms.announce(IH, "10.0.0.1", 1, "stopped", 5, 50, now=1) == []
    assert swarms.peers(IH, now=1) == [("10.0.0.2", 2)]
    swarms.announce(IH, "10.0.0.2", 2, "stopped", 5, 50, now=1)
    assert len(swarms) == 0


def test_peers_expire_after_ttl_of_now_passed_in() -> None:
    swarms = Swarms(ttl=15)
    swarms.announce(IH, "10.0.0.1", 1, "started", 5, 50, now=100)
    swarms.announce(IH, "10.0.0.2", 2, "started", 5, 50, now=110)
    assert swarms.peers(IH, now=115) == [("10.0.0.1", 1), ("10.0.0.2", 2)]  # exactly ttl: alive
    assert swarms.peers(IH, now=115.5) == [("10.0.0.2", 2)]
    # a re-announce refreshes last_seen
    swarms.announce(IH, "10.0.0.2", 2, "", 5, 50, now=120)
    assert swarms.announce(IH, "10.0.0.3", 3, "started", 5, 50, now=134) == [("10.0.0.2", 2)]
    assert swarms.peers(IH, now=200) == []


def test_dead_swarms_are_swept() -> None:
    swarms = Swarms(ttl=10)
    swarms.announce(IH, "10.0.0.1", 1, "started", 5, 50, now=0)
    swarms.announce(OTHER, "10.0.0.1", 1, "started", 5, 50, now=5)
    assert len(swarms) == 2
    swarms.announce(OTHER, "10.0.0.1", 1, "", 5, 50, now=11)  # sweep due: IH has nobody left
    assert len(swarms) == 1


def test_numwant_caps_the_answer() -> None:
    swarms = Swarms(rng=random.Random(1))
    for i in range(30):
        swarms.announce(IH, f"10.0.1.{i}", 1, "started", 5, 0, now=0)
    assert swarms.announce(IH, "10.0.0.1", 1, "started", 5, numwant=7, now=0) != []
    assert len(swarms.announce(IH, "10.0.0.1", 1, "", 5, numwant=7, now=0)) == 7
    assert swarms.announce(IH, "10.0.0.1", 1, "", 5, numwant=0, now=0) == []
    assert len(swarms.announce(IH, "10.0.0.1", 1, "", 5, numwant=500, now=0)) == 30


def test_seeds_and_leechers_are_counted() -> None:
    swarms = Swarms()
    swarms.announce(IH, "10.0.0.1", 1, "started", 0, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 1, "started", 10, 50, now=0)
    swarms.announce(IH, "10.0.0.3", 1, "started", 10, 50, now=0)
    assert swarms.counts(IH, now=0) == (1, 2)
    swarms.announce(IH, "10.0.0.3", 1, "completed", 0, 50, now=1)
    assert swarms.counts(IH, now=1) == (2, 1)
    assert swarms.counts(OTHER, now=1) == (0, 0)


def _fill(swarms: Swarms, seeds: int, leechers: int) -> tuple[set[tuple[str, int]], ...]:
    s = {(f"10.1.0.{i}", 1) for i in range(seeds)}
    lee = {(f"10.2.0.{i}", 1) for i in range(leechers)}
    for ip, port in s:
        swarms.announce(IH, ip, port, "started", 0, 0, now=0)
    for ip, port in lee:
        swarms.announce(IH, ip, port, "started", 7, 0, now=0)
    return s, lee


def test_seed_is_only_given_leechers() -> None:
    swarms = Swarms(rng=random.Random(2))
    _, leechers = _fill(swarms, 5, 3)
    got = swarms.announce(IH, "10.9.9.9", 1, "started", 0, 50, now=0)
    assert set(got) == leechers


def test_leecher_gets_a_mix_of_seeds_and_leechers() -> None:
    swarms = Swarms(rng=random.Random(3))
    seeds, leechers = _fill(swarms, 10, 10)
    got = swarms.announce(IH, "10.9.9.9", 1, "started", 7, 8, now=0)
    assert len(got) == 8 and len(set(got)) == 8
    assert len(set(got) & seeds) == 4 and len(set(got) & leechers) == 4


def test_leecher_always_gets_the_only_seed_and_shortfalls_are_filled() -> None:
    swarms = Swarms(rng=random.Random(4))
    seeds, leechers = _fill(swarms, 1, 10)
    got = set(swarms.announce(IH, "10.9.9.9", 1, "started", 7, 2, now=0))
    assert seeds <= got and len(got) == 2
    swarms = Swarms(rng=random.Random(5))
    seeds, leechers = _fill(swarms, 6, 1)  # few leechers: seeds fill the gap
    got = set(swarms.announce(IH, "10.9.9.9", 1, "started", 7, 4, now=0))
    assert leechers <= got and len(got & seeds) == 3


def test_limits() -> None:
    swarms = Swarms(max_swarms=1, max_peers_per_swarm=2)
    swarms.announce(IH, "10.0.0.1", 1, "started", 5, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 1, "started", 5, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 1, "", 5, 50, now=1)  # known peer: fine
    with pytest.raises(SwarmFull):
        swarms.announce(IH, "10.0.0.3", 1, "started", 5, 50, now=1)
    with pytest.raises(SwarmFull):
        swarms.announce(OTHER, "10.0.0.1", 1, "started", 5, 50, now=1)


ORIGIN = ("10.0.0.100", 7702)


def test_origin_is_listed_but_handed_out_only_where_allowed() -> None:
    swarms = Swarms(origins={ORIGIN}, rng=random.Random(6))
    assert swarms.announce(IH, *ORIGIN, "started", 0, 50, now=0) == []
    swarms.announce(IH, "10.0.0.1", 1, "started", 0, 50, now=0)  # a peer that has it all
    assert swarms.counts(IH, now=0) == (2, 0)
    rollout_host = swarms.announce(IH, "10.0.0.2", 1, "started", 9, 50, now=0, origin_ok=False)
    assert rollout_host == [("10.0.0.1", 1)]
    outsider = swarms.announce(IH, "10.0.0.3", 1, "started", 9, 50, now=0, origin_ok=True)
    assert set(outsider) == {ORIGIN, ("10.0.0.1", 1), ("10.0.0.2", 1)}
    # the origin never dials out, so it is given nobody, leechers included
    assert swarms.announce(IH, *ORIGIN, "", 0, 50, now=1) == []
    assert ORIGIN in swarms.peers(IH, now=1)


def test_scrape_counts_seeds_leechers_and_completions() -> None:
    swarms = Swarms()
    swarms.announce(IH, "10.0.0.1", 1, "started", 0, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 1, "started", 9, 50, now=0)
    swarms.announce(IH, "10.0.0.2", 1, "completed", 0, 50, now=1)
    swarms.announce(IH, "10.0.0.3", 1, "started", 9, 50, now=1)
    swarms.announce(OTHER, "10.0.0.1", 1, "started", 9, 50, now=1)
    got = swarms.scrape([IH], now=2)
    assert {ih: (s.complete, s.incomplete, s.downloaded) for ih, s in got.items()} == {
        IH: (2, 1, 1)
    }
    assert set(swarms.scrape([], now=2)) == {IH, OTHER}  # no info_hash: every swarm
    assert swarms.scrape([b"\x01" * 20], now=2) == {}  # unknown swarms are left out
    assert swarms.scrape([OTHER], now=2 + swarms.ttl + 1) == {}  # expired


def test_http_scrape() -> None:
    tracker = Tracker(interval=40, clock=lambda: 0.0)
    tracker.respond("127.0.0.1", _query(port=1, left=0))
    tracker.respond("127.0.0.2", _query(OTHER, port=1, left=3))
    both = b"/scrape?info_hash=" + urllib.parse.quote_from_bytes(IH).encode()
    both += b"&info_hash=" + urllib.parse.quote_from_bytes(OTHER).encode()
    status, body = tracker.respond("127.0.0.9", both)
    assert status == 200
    assert _bdecode(body) == {
        b"files": {
            IH: {b"complete": 1, b"incomplete": 0, b"downloaded": 0},
            OTHER: {b"complete": 0, b"incomplete": 1, b"downloaded": 0},
        },
        b"flags": {b"min_request_interval": 10},
    }
    assert set(_bdecode(tracker.respond("127.0.0.9", b"/scrape")[1])[b"files"]) == {IH, OTHER}
    bad = _bdecode(tracker.respond("127.0.0.9", b"/scrape?info_hash=abc")[1])
    assert b"info_hash" in bad[b"failure reason"]


def test_default_expiry_outlasts_libtorrent_default_announce_interval() -> None:
    """Interval, min interval and expiry agree: a client that waits the longest interval any
    libtorrent-based client uses by default (300 s) is never forgotten between announces."""
    tracker = Tracker(clock=lambda: 0.0)
    body = _bdecode(tracker.respond("127.0.0.1", _query(port=1))[1])
    assert body[b"interval"] == DEFAULT_INTERVAL
    assert body[b"min interval"] <= body[b"interval"]
    assert tracker.swarms.ttl >= 3 * DEFAULT_INTERVAL
    assert tracker.swarms.ttl > 300 + 30  # libtorrent's default min_announce_interval + slack


async def test_peers_stay_listed_over_hours_and_expire_after_silence(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Over simulated hours on trio's autojump clock: a peer that re-announces every interval
    (and one every 300 s, like a stock libtorrent client) is always listed; a peer that goes
    silent is gone once the expiry has passed, and not before."""
    tracker = Tracker()  # default interval, clock=trio.current_time
    keep_up, stock, silent = ("127.0.0.1", 1), ("127.0.0.2", 2), ("127.0.0.3", 3)
    start = trio.current_time()
    for ip, port in (keep_up, stock, silent):
        tracker.respond(ip, _query(port=port, event="started"))
    next_at = {keep_up: start + DEFAULT_INTERVAL, stock: start + 300.0}
    listed_silent_until = start
    while trio.current_time() - start < 4 * 3600:
        await trio.sleep(10)
        now = trio.current_time()
        for addr, due in next_at.items():
            if now >= due:
                tracker.respond(addr[0], _query(port=addr[1]))
                next_at[addr] = due + (DEFAULT_INTERVAL if addr == keep_up else 300.0)
        listed = tracker.swarm_peers(IH)
        assert keep_up in listed and stock in listed, now - start
        if silent in listed:
            listed_silent_until = now
    assert tracker.swarms.ttl - 10 <= listed_silent_until - start <= tracker.swarms.ttl


def test_bencode_is_strict() -> None:
    value: Bencodable = {b"b": [1, -2, b"\x00\xff", "h\u00e9"], b"a": {b"x": 0}, b"peers": b""}
    encoded = bencode(value)
    assert encoded.startswith(b"d1:ad1:xi0ee1:bli1ei-2e2:\x00\xff3:h\xc3\xa9e")
    assert _bdecode(encoded) == {
        b"a": {b"x": 0},
        b"b": [1, -2, b"\x00\xff", "h\u00e9".encode()],
        b"peers": b"",
    }
    with pytest.raises(TypeError):
        bencode(True)
    with pytest.raises(TypeError):
        bencode({b"x": 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        bencode({"key": 1})  # type: ignore[dict-item]
    assert bdecode(encoded) == _bdecode(encoded)
    with pytest.raises(TorrentError):
        bdecode(b"d1:a")


PEER_ID = b"-LT2110-\x00\xffabcdefghij"


def _query(info_hash: bytes = IH, peer_id: bytes = PEER_ID, **fields: str | int) -> bytes:
    q = "info_hash=" + urllib.parse.quote_from_bytes(info_hash, safe="")
    q += "&peer_id=" + urllib.parse.quote_from_bytes(peer_id, safe="")
    q += "".join(f"&{k}={v}" for k, v in fields.items())
    return f"/announce?{q}".encode()


def test_respond_rejects_bad_announces_with_failure_reason() -> None:
    tracker = Tracker(clock=lambda: 0.0)
    cases = {
        b"/announce?port=1": b"info_hash",
        _query(b"short", port=1): b"info_hash",
        _query(): b"missing port",
        _query(port=0): b"out of range",
        _query(port="x"): b"invalid port",
        _query(port=1, left=-1): b"out of range",
        _query(port=1, event="exploded"): b"invalid event",
        _query(port=1) + b"&a=1" * 70: b"too many",
        _query(port=1, peer_id=b"short"): b"peer_id",
        _query(port=1).replace(b"&peer_id=", b"&peer_idx="): b"peer_id",
    }
    for target, reason in cases.items():
        status, body = tracker.respond("127.0.0.1", target)
        decoded = _bdecode(body)
        assert status == 200 and reason in decoded[b"failure reason"], target
    assert tracker.respond("127.0.0.1", b"/scrapes")[0] == 404


def test_respond_non_compact_and_ipv6() -> None:
    tracker = Tracker(clock=lambda: 0.0)
    tracker.respond("::1", _query(port=7, left=0))
    tracker.respond("127.0.0.2", _query(port=8, left=0))
    tracker.respond("127.0.0.3", _query(port=10, left=5, peer_id=b"B" * 20))
    body = _bdecode(tracker.respond("127.0.0.1", _query(port=9, compact=0))[1])
    assert sorted(body[b"peers"], key=lambda p: p[b"port"]) == [
        {b"ip": b"::1", b"port": 7, b"peer id": PEER_ID},
        {b"ip": b"127.0.0.2", b"port": 8, b"peer id": PEER_ID},
        {b"ip": b"127.0.0.3", b"port": 10, b"peer id": b"B" * 20},
    ]
    body = _bdecode(tracker.respond("127.0.0.1", _query(port=9, compact=0, no_peer_id=1))[1])
    assert {b"ip": b"127.0.0.3", b"port": 10} in body[b"peers"]
    assert all(b"peer id" not in p for p in body[b"peers"])
    body = _bdecode(tracker.respond("127.0.0.1", _query(port=9))[1])
    assert sorted(_compact_peers(body[b"peers"])) == [("127.0.0.2", 8), ("127.0.0.3", 10)]
    assert body[b"peers6"] == bytes(15) + b"\x01" + struct.pack(">H", 7)


Connect = Callable[[int], Awaitable[trio.SocketStream]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open client connections to 127.0.0.1:PORT, all closed when the test ends."""
    streams: list[trio.SocketStream] = []

    async def open_stream(port: int) -> trio.SocketStream:
        streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        return streams[-1]

    yield open_stream
    for stream in streams:
        await stream.aclose()


async def _exchange(
    stream: trio.abc.Stream, conn: h11.Connection, target: bytes, raw: bytes | None = None
) -> tuple[int, bytes]:
    """Send one GET (h11-built, or `raw` bytes) and read the response with an h11 client."""
    out = conn.send(h11.Request(method="GET", target=target, headers=[("Host", "127.0.0.1")]))
    out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(raw if raw is not None else out)
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(4096)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, body


def _compact_peers(blob: bytes) -> list[tuple[str, int]]:
    return [
        (".".join(str(b) for b in blob[i : i + 4]), struct.unpack(">H", blob[i + 4 : i + 6])[0])
        for i in range(0, len(blob), 6)
    ]


async def test_http_announce_over_loopback(nursery: trio.Nursery, connect: Connect) -> None:
    tracker = Tracker(interval=7)
    port = await nursery.start(tracker.serve, "127.0.0.1", 0)
    binary_hash = b"\x00 %&=?+\xff" + bytes(12)  # characters that must survive %-escaping
    with trio.fail_after(TIMEOUT):
        first = await connect(port)
        literal = (
            _query(binary_hash, port=6881, left=0, event="started", numwant=10, compact=1)
            + b"&supportcrypto=1"
        )
        raw = b"GET " + literal + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, body = await _exchange(first, h11.Connection(h11.CLIENT), literal, raw=raw)
        reply = _bdecode(body)
        assert status == 200
        assert reply == {
            b"interval": 7,
            b"min interval": 1,
            b"complete": 1,
            b"incomplete": 0,
            b"peers": b"",
        }
        # a second peer, two requests on one keep-alive connection
        second = await connect(port)
        conn = h11.Connection(h11.CLIENT)
        for _ in range(2):
            status, body = await _exchange(second, conn, _query(binary_hash, port=6882, left=9))
            conn.start_next_cycle()
            reply = _bdecode(body)
            assert _compact_peers(reply[b"peers"]) == [("127.0.0.1", 6881)]
            assert (reply[b"complete"], reply[b"incomplete"]) == (1, 1)
        assert tracker.swarm_peers(binary_hash) == [("127.0.0.1", 6881), ("127.0.0.1", 6882)]


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"GET /announce HTTP/1.1\r\n\r\n"],
)
async def test_malformed_http_gets_400_and_close(
    nursery: trio.Nursery, connect: Connect, garbage: bytes
) -> None:
    port = await nursery.start(Tracker().serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        await stream.send_all(garbage)  # TLS hello; HTTP/1.1 without Host
        received = b""
        while chunk := await stream.receive_some(4096):
            received += chunk
        assert received.startswith(b"HTTP/1.1 400 ")


async def test_wrong_path_404_and_post_405(nursery: trio.Nursery, connect: Connect) -> None:
    port = await nursery.start(Tracker().serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        conn = h11.Connection(h11.CLIENT)
        assert (await _exchange(stream, conn, b"/favicon.ico"))[0] == 404
        conn.start_next_cycle()
        raw = b"POST /announce HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        assert (await _exchange(stream, conn, b"/announce", raw=raw))[0] == 405


async def test_silent_client_is_dropped_after_timeout(
    nursery: trio.Nursery, connect: Connect
) -> None:
    port = await nursery.start(Tracker(timeout=0.2).serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        await stream.send_all(b"GET /announce?port=1")  # never finishes the request line
        assert await stream.receive_some(4096) == b""


async def test_connection_limit(nursery: trio.Nursery, connect: Connect) -> None:
    port = await nursery.start(Tracker(max_connections=1).serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        held = await connect(port)
        assert (await _exchange(held, h11.Connection(h11.CLIENT), b"/x"))[0] == 404
        refused = await connect(port)
        assert await refused.receive_some(4096) == b""


def _session() -> lt.session:
    """A libtorrent session with shoal's own settings (see common.torrent.settings)."""
    settings = datacenter_settings("127.0.0.1", 0)
    settings["alert_mask"] = lt.alert_category.error | lt.alert_category.status
    return lt.session(lt.session_params(settings))


def _add(ses: lt.session, torrent: bytes, save_path: Path, *, seed: bool) -> lt.torrent_handle:
    atp = lt.load_torrent_buffer(torrent)
    atp.save_path = str(save_path)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(atp)


async def _until(predicate: Callable[[], bool]) -> None:
    # libtorrent changes state in its own threads: there is no event to wait on, so poll.
    while not predicate():
        await trio.sleep(0.02)


@pytest.mark.integration
async def test_libtorrent_swarm_through_the_tracker(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A v2-only private torrent: the seed registers under the truncated SHA-256 info-hash, a
    leecher learns the seed only from the tracker's compact reply and downloads the payload."""
    tracker = Tracker(interval=1)
    port = await nursery.start(tracker.serve, "127.0.0.1", 0)
    payload = os.urandom(200_000)
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "payload.bin").write_bytes(payload)
    ct = lt.create_torrent(
        [lt.create_file_entry("payload.bin", len(payload))], 0, lt.create_torrent.v2_only
    )
    ct.set_priv(True)
    ct.add_tracker(f"http://127.0.0.1:{port}/announce")
    lt.set_piece_hashes(ct, str(tmp_path / "seed"))
    torrent = lt.bencode(ct.generate())

    seeder, leecher = _session(), _session()
    seed_handle = _add(seeder, torrent, tmp_path / "seed", seed=True)
    info_hash = seed_handle.info_hashes().v2.to_bytes()[:20]
    seed_addr = ("127.0.0.1", seeder.listen_port())
    with trio.fail_after(TIMEOUT):
        await _until(lambda: tracker.swarm_peers(info_hash) == [seed_addr])
        leech_handle = _add(leecher, torrent, tmp_path / "leech", seed=False)
        await _until(lambda: leech_handle.status().is_seeding)
        assert (tmp_path / "leech" / "payload.bin").read_bytes() == payload
        assert ("127.0.0.1", leecher.listen_port()) in tracker.swarm_peers(info_hash)
        # removing the torrents sends event=stopped, which empties the swarm
        seeder.remove_torrent(seed_handle)
        leecher.remove_torrent(leech_handle)
        await _until(lambda: tracker.swarm_peers(info_hash) == [])


@pytest.mark.integration
async def test_a_libtorrent_seed_stays_listed_past_the_old_window(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """shoal's own seed (TorrentSession.seed) announces a hybrid torrent under both hashes and
    keeps re-announcing at the tracker's interval: with a 2 s interval (expiry 6 s) it is listed
    at every check for 17 s, past the 15 s after which the old tracker forgot every peer."""
    tracker = Tracker(interval=2)
    port = await nursery.start(tracker.serve, "127.0.0.1", 0)
    payload = tmp_path / "seed" / "payload.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(100_000))
    torrent, _ = make_torrent(payload, tracker_url=f"http://127.0.0.1:{port}/announce")
    session = TorrentSession("127.0.0.1", 0, overrides={"min_announce_interval": 1})
    await nursery.start(session.run)
    session.seed(torrent, payload.parent)
    me = ("127.0.0.1", session.listen_port)
    hashes = tracker_hashes(torrent)
    with trio.fail_after(TIMEOUT):
        await tracker.wait_listed(me, hashes)
    start = trio.current_time()
    while trio.current_time() - start < 17:
        assert all(me in tracker.swarm_peers(ih) for ih in hashes), trio.current_time() - start
        await trio.sleep(0.5)
    assert tracker.swarms.counts(hashes[0], trio.current_time()) == (1, 0)


async def test_per_address_cap_refuses_one_more_and_logs_it_once(
    nursery: trio.Nursery, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    port = await nursery.start(Tracker(max_per_address=2).serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        held = [await connect(port) for _ in range(2)]
        for stream in held:  # both are served
            assert (await _exchange(stream, h11.Connection(h11.CLIENT), b"/x"))[0] == 404
        for _ in range(5):  # a third and more from the same address are closed at once
            refused = await connect(port)
            with contextlib.suppress(trio.BrokenResourceError):
                assert await refused.receive_some(4096) == b""
    refusals = [r for r in caplog.records if "tracker refused" in r.getMessage()]
    assert len(refusals) == 1  # the rest are counted for the window's summary
    assert "127.0.0.1 has 2 connections open" in refusals[0].getMessage()
