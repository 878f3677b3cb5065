"""Faults a libtorrent session must survive, against real sessions on loopback addresses: an
interrupted download resumes from what was written; a seed whose file changed on disk re-checks
and stops serving the bad pieces."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from common.archive import file_digest
from common.recheck import RecheckPolicy
from common.torrent import TorrentSession, make_torrent, torrent_infohash
from common.torrent.metainfo import load
from common.torrent.resume import resume_path

DEAD_TRACKER = "http://127.0.0.1:1/announce"
SIZE = 4_000_000
RATE = 1_000_000  # bytes/s: slow enough to interrupt a download half-way


def release(tmp_path: Path) -> tuple[bytes, str, Path]:
    payload = tmp_path / "seed" / "release.bin"
    payload.parent.mkdir(parents=True)
    payload.write_bytes(os.urandom(SIZE))
    torrent, infohash = make_torrent(payload, tracker_url=DEAD_TRACKER)
    return torrent, infohash, payload


def piece_size(torrent: bytes) -> int:
    info = load(torrent).ti
    assert info is not None
    return int(info.piece_length())


async def test_an_interrupted_download_resumes_from_what_was_written(tmp_path: Path) -> None:
    torrent, ih, payload = release(tmp_path)
    dest = tmp_path / "leech"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            seed = TorrentSession("127.0.0.2")
            await nursery.start(seed.run)
            seed.seed(torrent, payload.parent)
            peers = [("127.0.0.2", seed.listen_port)]

            first = TorrentSession("127.0.0.3", overrides={"download_rate_limit": RATE})
            async with trio.open_nursery() as inner:
                await inner.start(first.run)
                with trio.move_on_after(2.0):
                    await first.download(torrent, dest, peers=peers)
                before = first.stats().downloaded
                inner.cancel_scope.cancel()  # the session closes: it saves resume data
            assert SIZE * 0.2 < before < SIZE * 0.8, f"not interrupted half-way: {before}"
            assert resume_path(dest, ih).is_file()

            second = TorrentSession("127.0.0.3")
            await nursery.start(second.run)
            await second.download(torrent, dest, peers=peers)
            again = second.transfer(ih)
            nursery.cancel_scope.cancel()
    # Everything received before the stop was kept: only the rest came again (plus at most a
    # piece that was in flight on the one connection).
    assert again.downloaded <= SIZE - before + piece_size(torrent), (before, again)
    assert file_digest(dest / "release.bin") == file_digest(payload)


async def test_a_finished_download_is_not_hashed_again_after_a_restart(tmp_path: Path) -> None:
    torrent, ih, payload = release(tmp_path)
    dest = tmp_path / "leech"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            seed = TorrentSession("127.0.0.2")
            await nursery.start(seed.run)
            seed.seed(torrent, payload.parent)
            first = TorrentSession("127.0.0.3")
            async with trio.open_nursery() as inner:
                await inner.start(first.run)
                await first.download(torrent, dest, peers=[("127.0.0.2", seed.listen_port)])
                inner.cancel_scope.cancel()
            seed.remove(ih)  # nobody to fetch from: it must come up complete on its own
            second = TorrentSession("127.0.0.3")
            await nursery.start(second.run)
            await second.download(torrent, dest)
            assert second.transfer(ih).downloaded == 0
            nursery.cancel_scope.cancel()


async def _leech_from(
    seed_ip: str, seed: TorrentSession, torrent: bytes, dest: Path, ip: str, wait: float
) -> tuple[int, int]:
    """(failed, verified) bytes of a leecher that fetches from one seed only for `wait` s."""
    async with trio.open_nursery() as nursery:
        leech = TorrentSession(ip)
        await nursery.start(leech.run)
        with trio.move_on_after(wait):
            await leech.download(torrent, dest, peers=[(seed_ip, seed.listen_port)])
        got = leech.transfer(torrent_infohash(torrent))
        nursery.cancel_scope.cancel()
    return got.failed, got.verified


async def _corrupted_seed(
    nursery: trio.Nursery, torrent: bytes, payload: Path, dest: Path, ip: str, policy: RecheckPolicy
) -> TorrentSession:
    """A peer that downloaded the release, then had its file changed on disk."""
    origin = TorrentSession("127.0.0.2")
    await nursery.start(origin.run)
    origin.seed(torrent, payload.parent)
    peer = TorrentSession(ip, recheck=policy)
    await nursery.start(peer.run)
    await peer.download(torrent, dest, peers=[("127.0.0.2", origin.listen_port)])
    origin.remove(torrent_infohash(torrent))
    await trio.sleep(0.5)  # let the watch see the good file once
    with (dest / "release.bin").open("r+b") as f:
        f.seek(SIZE // 2)
        f.write(os.urandom(100_000))
    return peer


async def test_a_seed_whose_file_changed_stops_serving_the_bad_pieces(tmp_path: Path) -> None:
    torrent, ih, payload = release(tmp_path)
    fast = RecheckPolicy(tick=0.2, min_gap=0.5)
    never = RecheckPolicy(tick=3600.0)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            # Control: a seed that does not watch serves the changed pieces; the leecher's hash
            # checks catch them (this is the behaviour the watch removes).
            blind = await _corrupted_seed(
                nursery, torrent, payload, tmp_path / "b", "127.0.0.4", never
            )
            failed, _ = await _leech_from(
                "127.0.0.4", blind, torrent, tmp_path / "l1", "127.0.0.5", 4
            )
            assert failed > 0

            watching = await _corrupted_seed(
                nursery, torrent, payload, tmp_path / "w", "127.0.0.6", fast
            )
            while watching.rechecks == 0:
                await trio.sleep(0.1)
            await trio.sleep(1.0)  # the re-check of a 4 MB file
            failed, verified = await _leech_from(
                "127.0.0.6", watching, torrent, tmp_path / "l2", "127.0.0.7", 4
            )
            assert failed == 0, "a re-checked seed served a bad piece"
            assert 0 < verified < SIZE  # the good pieces still flow, the bad ones are not offered
            assert watching.transfer(ih).verified < SIZE
            nursery.cancel_scope.cancel()


async def test_a_seed_that_is_left_alone_is_not_rechecked(tmp_path: Path) -> None:
    """The watch only acts on a change: an untouched seed keeps serving without re-hashing."""
    torrent, ih, payload = release(tmp_path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            seed = TorrentSession("127.0.0.2", recheck=RecheckPolicy(tick=0.1, min_gap=0.2))
            await nursery.start(seed.run)
            seed.seed(torrent, payload.parent)
            await trio.sleep(1.5)
            assert seed.rechecks == 0
            payload.touch()  # the metadata changed: that is enough to look again
            while seed.rechecks == 0:
                await trio.sleep(0.1)
            await trio.sleep(1.0)
            assert seed.transfer(ih).verified == SIZE  # same bytes: every piece still good
            nursery.cancel_scope.cancel()
