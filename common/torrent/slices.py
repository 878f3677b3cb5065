"""The seeder's slice seeds: one libtorrent session per slice, each offering only its pieces.

See :mod:`common.pieces` for why. A session per slice (not a torrent per slice) keeps the
release's one infohash, so peers verify against the same torrent and trade with each other
normally; each slice session simply *has* only its share of the pieces. Slice seeds never
announce: a slice is worth fetching only to the target the rollout gave it to. Sessions are
created on first use, on their own ports of the seeder's IP, and hold the slice of every release
rolled out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from common.pieces import slice_mask
from common.torrent.metainfo import load, torrent_infohash
from common.torrent.session import TorrentSession, TransferStats

log = logging.getLogger("shoal.torrent.slices")

# A slice session carries a fraction of the seeder's upload: a couple of disk threads will do.
SLICE_SETTINGS: dict[str, Any] = {"aio_threads": 2, "hashing_threads": 1, "tick_interval": 500}
# Slice sessions a seeder starts up front: creating 16 on the first rollout took 0.43 s of its
# start-up latency (bench/README.md). More are created when a rollout needs them.
WARM_SLICES = 16


class SliceSeeds:
    def __init__(self, ip: str, overrides: dict[str, Any] | None = None, *, warm: int = 0) -> None:
        self.ip = ip
        self.warm = warm  # sessions run() starts before it reports started
        self.overrides = {**SLICE_SETTINGS, **(overrides or {})}
        self._sessions: list[TorrentSession] = []
        self._offered: dict[tuple[int, str], int] = {}  # (slice, infohash) -> count offered
        self._nursery: trio.Nursery | None = None
        self._allowed: list[str] | None = None  # the IP filter of every slice session

    def set_allowed_peers(self, addresses: Iterable[str] | None) -> None:
        """Only ``addresses`` may connect to any slice session (see TorrentSession)."""
        self._allowed = None if addresses is None else sorted(addresses)
        for session in self._sessions:
            session.set_allowed_peers(self._allowed)

    def admits(self, address: str) -> bool:
        """Whether every slice session lets ``address`` connect (see TorrentSession.admits)."""
        return all(session.admits(address) for session in self._sessions)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._grow(self.warm)
            task_status.started()
            await trio.sleep_forever()

    async def endpoints(self, torrent: bytes, save_path: Path, count: int) -> list[tuple[str, int]]:
        """Offer slice k of ``count`` of a release on slice session k; their addresses."""
        assert self._nursery is not None, "SliceSeeds.run() must be running"
        info = load(torrent).ti
        assert info is not None
        num_pieces = info.num_pieces()
        await self._grow(count)
        for k in range(count):
            session = self._sessions[k]
            ih = torrent_infohash(torrent)
            if self._offered.get((k, ih)) == count:
                continue
            session.remove(ih)  # a different split of the same release: replace it
            session.seed(
                torrent, save_path, pieces=slice_mask(num_pieces, k, count), announce=False
            )
            self._offered[(k, ih)] = count
        log.info(
            "release offered in %d slice(s) on ports %s",
            count,
            [s.listen_port for s in self._sessions[:count]],
        )
        return [(self.ip, s.listen_port) for s in self._sessions[:count]]

    def drop(self, infohash: str) -> None:
        """Stop offering a release's slices (the seeder no longer seeds it)."""
        for session in self._sessions:
            session.remove(infohash)
        self._offered = {key: n for key, n in self._offered.items() if key[1] != infohash}

    async def _grow(self, count: int) -> None:
        assert self._nursery is not None
        while len(self._sessions) < count:
            session = TorrentSession(self.ip, 0, overrides=self.overrides)
            session.set_allowed_peers(self._allowed)
            await self._nursery.start(session.run)
            self._sessions.append(session)

    def stats(self) -> TransferStats:
        totals = [s.stats() for s in self._sessions]
        return TransferStats(sum(t.uploaded for t in totals), sum(t.downloaded for t in totals))
