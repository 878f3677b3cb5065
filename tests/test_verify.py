"""Verifying and unpacking while downloading, against real libtorrent sessions on loopback.

The release is a real archive (git_archive of a repo with incompressible content) in a torrent
with small pieces (the swarm may complete them out of order: common.inorder's unit tests cover
that); the streamed digest and tree must equal what the file-based path gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from common.archive import unpack
from common.errors import TorrentError
from common.torrent import TorrentSession, make_torrent
from peer.verify import download_streamed
from seeder.packing import pack_tree

pytestmark = pytest.mark.integration

DEAD_TRACKER = "http://127.0.0.1:1/announce"
TIMEOUT = 60
PIECE = 16 * 1024


@dataclass(frozen=True)
class Archive:
    path: Path
    size: int
    digest: str


def release(tmp_path: Path, size: int = 1_500_000) -> tuple[Archive, bytes]:
    repo = tmp_path / "app"
    (repo / "bin").mkdir(parents=True)
    (repo / "payload.bin").write_bytes(os.urandom(size))
    (repo / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    (repo / "bin" / "run").chmod(0o755)
    packed = pack_tree(repo, tmp_path / "seed" / "app.tar.zst")
    info = Archive(tmp_path / "seed" / "app.tar.zst", packed.size, packed.digest)
    torrent, _ = make_torrent(info.path, tracker_url=DEAD_TRACKER, piece_size=PIECE)
    return info, torrent


async def start(nursery: trio.Nursery, ip: str) -> TorrentSession:
    session = TorrentSession(ip)
    await nursery.start(session.run)
    return session


def same_tree(a: Path, b: Path) -> None:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    for name in names:
        assert (a / name).lstat().st_mode == (b / name).lstat().st_mode
        if (a / name).is_file():
            assert (a / name).read_bytes() == (b / name).read_bytes()


async def test_streamed_download_verifies_and_unpacks(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    info, torrent = release(tmp_path)
    seeder = await start(nursery, "127.0.0.1")
    seeder.seed(torrent, info.path.parent)
    peers = [("127.0.0.1", seeder.listen_port)]
    leechers = [await start(nursery, f"127.0.0.{i}") for i in (2, 3)]
    results = {}
    reported: dict[int, dict[str, int]] = {}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as downloads:
            for n, leecher in enumerate(leechers):

                async def one(n: int = n, leecher: TorrentSession = leecher) -> None:
                    others = [("127.0.0.2", leechers[0].listen_port)] if n else []

                    def done(sources: dict[str, int], n: int = n) -> None:
                        reported[n] = sources

                    results[n] = await download_streamed(
                        leecher,
                        torrent,
                        tmp_path / f"dl{n}" / info.path.name,
                        tmp_path / f"releases{n}" / "r1",
                        info.digest,
                        done,
                        peers=peers + others,
                    )

                downloads.start_soon(one)
    unpack(info.path, tmp_path / "plain" / "r1")
    for n in (0, 1):
        streamed = results[n]
        assert sum(reported[n].values()) > 0  # the download was reported, with its sources
        assert streamed.error is None
        assert streamed.digest == info.digest
        assert streamed.safe == streamed.read == info.size
        assert not (tmp_path / f"releases{n}" / "r1").exists()  # published by the stage only
        streamed.unpack(tmp_path / f"dl{n}" / info.path.name, tmp_path / f"releases{n}" / "r1")
        same_tree(tmp_path / "plain" / "r1", tmp_path / f"releases{n}" / "r1")
        assert [p.name for p in (tmp_path / f"releases{n}").iterdir()] == ["r1"]


async def test_follow_a_complete_file(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A restarted peer whose file is already complete: the whole file is safe at once."""
    info, torrent = release(tmp_path, 300_000)
    session = await start(nursery, "127.0.0.4")
    told: list[int] = []

    async def grew(safe: int) -> None:
        told.append(safe)

    with trio.fail_after(TIMEOUT):
        await session.follow(torrent, info.path.parent, grew)
    assert told == [info.size]  # not the padded size of whole pieces


async def test_follow_reports_a_growing_prefix(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A slow download in file order: the safe prefix grows in steps, each readable from the
    file at that moment, and ends at the file's size."""
    info, torrent = release(tmp_path, 600_000)
    seeder = await start(nursery, "127.0.0.1")
    seeder.seed(torrent, info.path.parent)
    leecher = TorrentSession(
        "127.0.0.7",
        overrides={"download_rate_limit": 1_000_000, "ignore_limits_on_local_network": False},
    )
    await nursery.start(leecher.run)
    archive = tmp_path / "dl" / info.path.name
    expected = info.path.read_bytes()
    told: list[int] = []

    async def grew(safe: int) -> None:
        told.append(safe)
        with archive.open("rb") as f:
            assert f.read(safe) == expected[:safe]

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as both:
            both.start_soon(lambda: leecher.follow(torrent, archive.parent, grew, sequential=True))
            await leecher.download(
                torrent, archive.parent, peers=[("127.0.0.1", seeder.listen_port)]
            )
    assert told == sorted(set(told)) and told[-1] == info.size
    assert len(told) >= 2  # it grew while downloading, not only at the end


async def test_wrong_digest_falls_back_and_leaves_no_tree(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    info, torrent = release(tmp_path, 300_000)
    seeder = await start(nursery, "127.0.0.1")
    seeder.seed(torrent, info.path.parent)
    leecher = await start(nursery, "127.0.0.5")
    with trio.fail_after(TIMEOUT):
        streamed = await download_streamed(
            leecher,
            torrent,
            tmp_path / "dl" / info.path.name,
            tmp_path / "releases" / "r1",
            "sha256:" + "0" * 64,
            lambda sources: None,
            peers=[("127.0.0.1", seeder.listen_port)],
        )
    assert streamed.digest is None and streamed.unpacked is None
    assert streamed.error is not None and "not the manifest's" in streamed.error
    assert not (tmp_path / "releases").exists() or list((tmp_path / "releases").iterdir()) == []
    # the stage then unpacks from the file, as before the streaming pass existed
    streamed.unpack(tmp_path / "dl" / info.path.name, tmp_path / "releases" / "r1")
    assert (tmp_path / "releases" / "r1" / "bin" / "run").exists()


async def test_failed_download_raises_unwrapped_and_cleans_up(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    info, torrent = release(tmp_path, 300_000)
    leecher = await start(nursery, "127.0.0.6")
    target = tmp_path / "releases" / "r1"

    async def remove_soon() -> None:
        await trio.sleep(0.3)
        leecher.remove(next(iter(leecher._torrents)))

    nursery.start_soon(remove_soon)
    with trio.fail_after(TIMEOUT), pytest.raises(TorrentError, match="removed"):
        await download_streamed(
            leecher, torrent, tmp_path / "dl" / info.path.name, target, info.digest, lambda s: None
        )
    assert not target.exists()
    assert not (target.parent / ".r1.streaming").exists()
