"""common.torrent against real libtorrent sessions on loopback addresses (no mocks).

Linux routes all of 127.0.0.0/8 to lo, so each session gets its own address (127.0.0.x) as
hosts of a fleet would; allow_multiple_connections_per_ip stays False as in production.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import struct
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from common.errors import TorrentError
from common.torrent import (
    SliceSeeds,
    TorrentSession,
    choose_piece_size,
    make_torrent,
    torrent_infohash,
    tracker_hashes,
)
from common.torrent.metainfo import MAX_PIECE_SIZE, MIN_PIECE_SIZE

DEAD_TRACKER = "http://127.0.0.1:1/announce"  # nothing listens there: must not hurt
TIMEOUT = 60


def write_payload(path: Path, size: int = 4_000_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


class _Tracker(http.server.BaseHTTPRequestHandler):
    """Minimal BEP 3/23 announce handler: one swarm per info_hash, compact peers."""

    swarms: dict[bytes, set[tuple[str, int]]]
    announced: threading.Event

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(kv.partition("=")[::2] for kv in url.query.split("&"))
        info_hash = urllib.parse.unquote_to_bytes(query["info_hash"])  # raw bytes: no parse_qs
        me = (self.client_address[0], int(query["port"]))
        swarm = self.swarms.setdefault(info_hash, set())
        swarm.add(me)
        self.announced.set()
        peers = b"".join(
            socket.inet_aton(ip) + struct.pack(">H", port) for ip, port in swarm if (ip, port) != me
        )
        body = b"d8:intervali5e5:peers%d:%se" % (len(peers), peers)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def tracker() -> Iterator[tuple[str, dict[bytes, set[tuple[str, int]]], threading.Event]]:
    """An HTTP tracker on 127.0.0.1 in a thread: yields (announce URL, swarms, announced)."""
    swarms: dict[bytes, set[tuple[str, int]]] = {}
    announced = threading.Event()
    handler = type("Handler", (_Tracker,), {"swarms": swarms, "announced": announced})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/announce", swarms, announced
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def start(nursery: trio.Nursery, ip: str) -> TorrentSession:
    session = TorrentSession(ip)
    await nursery.start(session.run)
    return session


def test_choose_piece_size() -> None:
    assert choose_piece_size(0) == MIN_PIECE_SIZE
    assert choose_piece_size(4_000_000) == 32 * 1024
    assert choose_piece_size(50_000_000) == 32 * 1024
    assert choose_piece_size(1 << 30) == 512 * 1024
    assert choose_piece_size(2 << 30) == 1 << 20
    assert choose_piece_size(100 << 30) == MAX_PIECE_SIZE
    for size in (1, 10**6, 3 * 10**8, 5 * 10**9):
        piece = choose_piece_size(size)
        assert piece & (piece - 1) == 0


def test_make_torrent_is_deterministic(tmp_path: Path) -> None:
    payload = write_payload(tmp_path / "a" / "release.tar.zst", 1_000_000)
    data, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    again, infohash_again = make_torrent(payload, tracker_url=DEAD_TRACKER)
    assert data == again
    assert infohash == infohash_again == torrent_infohash(data)
    assert len(infohash) == 64  # the v2 (SHA-256) infohash names the release
    assert b"7:privatei1e" in data
    assert b"12:meta versioni2e" in data
    assert b"6:pieces" in data  # hybrid: the v1 part that v1-only clients read
    assert len(tracker_hashes(data)) == 2
    assert b"creation date" not in data
    assert b"created by" not in data

    copy = tmp_path / "b" / "release.tar.zst"
    copy.parent.mkdir()
    copy.write_bytes(payload.read_bytes())
    assert make_torrent(copy, tracker_url=DEAD_TRACKER) == (data, infohash)

    other = write_payload(tmp_path / "c" / "release.tar.zst", 1_000_000)
    assert make_torrent(other, tracker_url=DEAD_TRACKER)[1] != infohash
    assert make_torrent(payload, tracker_url=DEAD_TRACKER, piece_size=1 << 20)[1] != infohash


def test_make_torrent_errors(tmp_path: Path) -> None:
    with pytest.raises(TorrentError):
        make_torrent(tmp_path / "missing", tracker_url=DEAD_TRACKER)
    with pytest.raises(TorrentError):
        make_torrent(write_payload(tmp_path / "x", 10), tracker_url=DEAD_TRACKER, piece_size=3000)
    with pytest.raises(TorrentError):
        torrent_infohash(b"not a torrent")


async def test_swarm_download(tmp_path: Path, nursery: trio.Nursery) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin")
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    seeder = await start(nursery, "127.0.0.1")
    first = await start(nursery, "127.0.0.2")
    second = await start(nursery, "127.0.0.3")
    assert seeder.seed(torrent, payload.parent) == infohash
    assert seeder.seed(torrent, payload.parent) == infohash  # idempotent
    assert seeder.has(infohash)
    origin = ("127.0.0.1", seeder.listen_port)
    progress: list[float] = []

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as downloads:
            downloads.start_soon(
                lambda: first.download(
                    torrent, tmp_path / "first", peers=[origin], on_progress=progress.append
                )
            )
            downloads.start_soon(
                lambda: second.download(
                    torrent, tmp_path / "second", peers=[origin, ("127.0.0.2", first.listen_port)]
                )
            )

    expected = payload.read_bytes()
    for name in ("first", "second"):
        assert (tmp_path / name / "release.bin").read_bytes() == expected
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    for session in (first, second):
        assert session.has(infohash)  # keeps seeding
        assert session.stats().downloaded >= len(expected)
    with trio.fail_after(5):  # libtorrent folds upload counters into the totals on its tick
        # each downloader received the file once, from the seeder or from the other one
        while sum(s.stats().uploaded for s in (seeder, first, second)) < 2 * len(expected):
            await trio.sleep(0.05)
    assert isinstance(seeder.peers_of(infohash), list)
    assert seeder.peers_of("0" * 64) == []

    # A restart: the files are complete on disk, libtorrent's check finds them.
    restarted = await start(nursery, "127.0.0.4")
    with trio.fail_after(TIMEOUT):
        await restarted.download(torrent, tmp_path / "first")
    assert restarted.stats().downloaded == 0

    first.remove(infohash, delete_files=True)
    first.remove(infohash)  # unknown now: no-op
    assert not first.has(infohash)


async def test_download_via_loopback_tracker(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Seeds and downloaders announce, so a second downloader given no peers at all finds the
    others through the tracker alone (ssrf_mitigation allows a loopback tracker whose path
    starts with /announce); a seed added with announce=False (a slice seed) stays unlisted."""
    payload = write_payload(tmp_path / "seed" / "release.bin", 1_000_000)
    with tracker() as (url, swarms, announced):
        torrent, infohash = make_torrent(payload, tracker_url=url)
        seeder = await start(nursery, "127.0.0.1")
        seeder.seed(torrent, payload.parent, announce=False)
        with trio.fail_after(TIMEOUT):
            first = await start(nursery, "127.0.0.2")
            await first.download(
                torrent, tmp_path / "first", peers=[("127.0.0.1", seeder.listen_port)]
            )
            await trio.to_thread.run_sync(announced.wait, TIMEOUT)
            # hybrid torrents announce the v1 hash and the first 20 bytes of the v2 one
            assert bytes.fromhex(infohash)[:20] in tracker_hashes(torrent)
            while sorted(swarms) != sorted(tracker_hashes(torrent)):  # two announces
                await trio.sleep(0.05)
            assert ("127.0.0.1", seeder.listen_port) not in swarms[bytes.fromhex(infohash)[:20]]
            second = await start(nursery, "127.0.0.3")
            await second.download(torrent, tmp_path / "second")
        assert (tmp_path / "second" / "release.bin").read_bytes() == payload.read_bytes()
        assert ("127.0.0.3", second.listen_port) in swarms[bytes.fromhex(infohash)[:20]]


async def test_cancelled_download_can_be_resumed(tmp_path: Path, nursery: trio.Nursery) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin", 1_000_000)
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    seeder = await start(nursery, "127.0.0.1")
    seeder.seed(torrent, payload.parent)
    leecher = await start(nursery, "127.0.0.2")
    with trio.move_on_after(0.2) as waited:
        await leecher.download(torrent, tmp_path / "leech")  # no peers yet: cannot finish
    assert waited.cancelled_caught
    assert leecher.has(infohash)  # cancelling only stopped the wait
    with trio.fail_after(TIMEOUT):
        await leecher.download(
            torrent, tmp_path / "leech", peers=[("127.0.0.1", seeder.listen_port)]
        )
    assert (tmp_path / "leech" / "release.bin").read_bytes() == payload.read_bytes()


async def test_download_to_unwritable_path_fails(tmp_path: Path, nursery: trio.Nursery) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin", 1_000_000)
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    seeder = await start(nursery, "127.0.0.1")
    seeder.seed(torrent, payload.parent)
    leecher = await start(nursery, "127.0.0.2")
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file where a directory should be")
    with trio.fail_after(TIMEOUT), pytest.raises(TorrentError):
        await leecher.download(
            torrent, blocker / "downloads", peers=[("127.0.0.1", seeder.listen_port)]
        )
    assert not leecher.has(infohash)  # removed, so a retry starts afresh


async def test_remove_fails_pending_download(tmp_path: Path, nursery: trio.Nursery) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin", 100_000)
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    leecher = await start(nursery, "127.0.0.2")

    async def remove_soon() -> None:
        await trio.sleep(0.2)
        leecher.remove(infohash)

    nursery.start_soon(remove_soon)
    with trio.fail_after(TIMEOUT), pytest.raises(TorrentError, match="removed"):
        await leecher.download(torrent, tmp_path / "leech")  # no peers: would wait forever


async def test_seed_refuses_missing_payload(tmp_path: Path) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin", 100_000)
    torrent, _ = make_torrent(payload, tracker_url=DEAD_TRACKER)
    session = TorrentSession("127.0.0.1")
    with pytest.raises(TorrentError):
        session.seed(torrent, tmp_path / "elsewhere")
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "release.bin").write_bytes(b"too short")
    with pytest.raises(TorrentError):
        session.seed(torrent, tmp_path / "short")


async def test_closed_session_refuses_work(tmp_path: Path) -> None:
    payload = write_payload(tmp_path / "seed" / "release.bin", 100_000)
    torrent, _ = make_torrent(payload, tracker_url=DEAD_TRACKER)
    session = TorrentSession("127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        nursery.cancel_scope.cancel()
    with pytest.raises(TorrentError, match="closed"):
        session.seed(torrent, payload.parent)


def test_listen_port_in_use_is_an_error() -> None:
    first = TorrentSession("127.0.0.1")
    with pytest.raises(TorrentError):
        TorrentSession("127.0.0.1", first.listen_port)


async def test_slice_seeds_start_warm(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Sessions started up front are the ones the first rollout gets; more are added."""
    payload = write_payload(tmp_path / "seed" / "release.bin", 100_000)
    torrent, _ = make_torrent(payload, tracker_url=DEAD_TRACKER)
    seeds = SliceSeeds("127.0.0.1", warm=2)
    await nursery.start(seeds.run)
    warmed = [s.listen_port for s in seeds._sessions]
    assert len(warmed) == 2 and all(warmed)
    endpoints = await seeds.endpoints(torrent, payload.parent, 3)
    assert [port for _, port in endpoints][:2] == warmed
    assert len({port for _, port in endpoints}) == 3


async def test_slice_seeds_send_each_piece_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Two peers, two slice seeds and no full seed: each peer gets its own slice from the
    seeder and the other slice from the other peer, so the seeder uploads the release once."""
    size = 4_000_000
    payload = write_payload(tmp_path / "seed" / "release.bin", size)
    torrent, _ = make_torrent(payload, tracker_url=DEAD_TRACKER, piece_size=64 * 1024)
    seeds = SliceSeeds("127.0.0.1")
    await nursery.start(seeds.run)
    endpoints = await seeds.endpoints(torrent, payload.parent, 2)
    assert len({port for _, port in endpoints}) == 2
    a, b = await start(nursery, "127.0.0.2"), await start(nursery, "127.0.0.3")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as both:
            for index, (peer, other) in enumerate([(a, b), (b, a)]):
                both.start_soon(
                    functools.partial(
                        peer.download,
                        torrent,
                        tmp_path / f"peer{index}",
                        peers=[(f"127.0.0.{3 - index}", other.listen_port)],
                        piece_slice=(index, 2),
                        slice_seeds=endpoints,
                    )
                )
    for index in range(2):
        assert (tmp_path / f"peer{index}" / "release.bin").read_bytes() == payload.read_bytes()
    with trio.fail_after(TIMEOUT):
        while seeds.stats().uploaded < size:  # libtorrent folds in transfers once a second
            await trio.sleep(0.2)
    assert seeds.stats().uploaded <= size * 1.05
    assert min(a.stats().uploaded, b.stats().uploaded) > size * 0.4  # the peers traded halves


async def test_running_download_takes_new_sources(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A download told about a dead slice seed (a seeder that since restarted elsewhere)
    completes once update_sources() gives it the new address."""
    payload = write_payload(tmp_path / "seed" / "release.bin", 1_000_000)
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    seeds = SliceSeeds("127.0.0.1")
    await nursery.start(seeds.run)
    peer = await start(nursery, "127.0.0.2")
    dead = [("127.0.0.1", 1)]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            inner.start_soon(
                functools.partial(
                    peer.download, torrent, tmp_path / "peer", piece_slice=(0, 1), slice_seeds=dead
                )
            )
            await trio.sleep(0.5)
            assert not (tmp_path / "peer" / "release.bin").exists()
            live = await seeds.endpoints(torrent, payload.parent, 1)
            peer.update_sources(infohash, [], live)
    assert (tmp_path / "peer" / "release.bin").read_bytes() == payload.read_bytes()
