"""Verify and unpack a release while it downloads, so that little is left when its last piece
lands.

Hashing and unpacking 50 MB after the download took 2 s at the end of a 16-host rollout, all
hosts at once on shared CPUs (bench/README.md). Instead, a thread reads the archive file while it
is being written, hashing every byte and unpacking it in one pass
(:class:`~common.archive.StreamedUnpack`), never past the prefix that libtorrent has completed,
hash-checked and written out (:meth:`TorrentSession.follow`). Peers fetch the front of the file
first (:func:`common.pieces.piece_priorities`), so that prefix grows during the download. Its
growth reaches the thread as 8-byte offsets over a pipe; the pipe's end is the end of the stream.

Nothing goes live before it is verified: the tree is unpacked into a hidden directory and
becomes the release directory only when the whole archive's digest matched the manifest. The
streaming pass is an optimisation and never the only way: if it fails for any reason (the file
cannot be read, a digest that does not match, an archive that does not unpack), the
stage verifies and unpacks from the downloaded file as before, and reports what that finds.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from common.archive import StreamedUnpack, unpack
from common.errors import ShoalError
from common.torrent import TorrentSession

log = logging.getLogger("shoal.peer.verify")

# Once the download is done, the streaming pass gets this long without progress to finish.
STREAM_STALL: Final = 10.0
# Ask libtorrent for pieces in file order while streaming: lost on the testbed (bench/README.md);
# common.pieces.piece_priorities fetches the front of the file first instead.
SEQUENTIAL: Final = False


@dataclass
class Streamed:
    """What the streaming pass left behind: the archive's digest if it matched the manifest
    (else None: verify from the file), and the tree unpacked from it."""

    digest: str | None = None
    unpacked: StreamedUnpack | None = None
    error: str | None = None  # why the pass gave up (logged; the file-based path takes over)
    safe: int = 0  # bytes of the archive downloaded, checked and written out
    read: int = 0  # bytes of it the unpacker has read (progress, for the stall check)
    ended: trio.Event = field(default_factory=trio.Event)

    def unpack(self, archive: Path, dest: Path) -> None:
        """Publish the streamed tree, or unpack ``archive`` if there is none. Blocking."""
        if self.unpacked is not None:
            self.unpacked.publish()
        else:
            unpack(archive, dest)

    def fail(self, error: str) -> None:
        if self.error is None:
            self.error = error


async def download_streamed(
    torrents: TorrentSession,
    torrent: bytes,
    archive: Path,
    release_dir: Path,
    expected_digest: str,
    downloaded: Callable[[dict[str, int]], None],
    *,
    peers: Sequence[tuple[str, int]] = (),
    piece_slice: tuple[int, int] | None = None,
    slice_seeds: Sequence[tuple[str, int]] = (),
    on_progress: Callable[[float], None] | None = None,
) -> Streamed:
    """:meth:`TorrentSession.download` of ``archive`` (the torrent's one file), verifying and
    unpacking it on the way.

    Calls ``downloaded`` with what the download returns as soon as it is done, then waits for
    the streaming pass (which trails it by a few pieces) and returns its :class:`Streamed`
    result (digest set only if it matched ``expected_digest``). Raises what the download
    raises; the streaming pass never fails the download.
    """
    streamed = Streamed()
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stream, torrents, torrent, archive, release_dir, streamed)
        try:
            downloaded(
                await torrents.download(
                    torrent,
                    archive.parent,
                    peers=peers,
                    piece_slice=piece_slice,
                    slice_seeds=slice_seeds,
                    on_progress=on_progress,
                )
            )
            at_end, done_at = streamed.read, trio.current_time()
            await _finish(streamed)
            log.info(
                "%s: %d of %d bytes verified and unpacked when the download ended, "
                "the rest %.2fs later",
                archive.name,
                at_end,
                streamed.read,
                trio.current_time() - done_at,
            )
        except Exception as exc:  # re-raised as is below, not inside an exception group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        if streamed.unpacked is not None:
            streamed.unpacked.discard()
        raise failure
    if streamed.digest is not None and streamed.digest != expected_digest:
        streamed.fail(f"streamed digest {streamed.digest} is not the manifest's")
        streamed.digest = None
    if streamed.digest is None and streamed.unpacked is not None:
        streamed.unpacked.discard()
        streamed.unpacked = None
    if streamed.error is not None:
        log.warning("verifying from the file instead: %s", streamed.error)
    return streamed


async def _finish(streamed: Streamed) -> None:
    """Wait for the streaming pass to end while it makes progress (it trails the download by
    the last flush and what the unpacker has not read yet)."""
    while not streamed.ended.is_set():
        before = streamed.read
        with trio.move_on_after(STREAM_STALL):
            await streamed.ended.wait()
        if not streamed.ended.is_set() and streamed.read == before:
            streamed.fail(f"no progress for {STREAM_STALL:.0f}s after the download")
            return


async def _stream(
    torrents: TorrentSession, torrent: bytes, archive: Path, dest: Path, streamed: Streamed
) -> None:
    """Follow the download's safe prefix; a thread reads the file up to it and unpacks."""
    unpacker = StreamedUnpack(dest)
    r, w = os.pipe()
    growing = _GrowingFile(archive, r, streamed)

    def unpack_side() -> str:
        try:
            return unpacker.run(growing)
        finally:
            growing.close()  # a writer still sending gets EPIPE instead of blocking forever

    async def follow_side() -> None:
        async def grew(safe: int) -> None:
            await pipe.send_all(struct.pack("<Q", safe))
            streamed.safe = safe

        try:
            async with trio.lowlevel.FdStream(w) as pipe:
                await torrents.follow(torrent, archive.parent, grew, sequential=SEQUENTIAL)
        except (ShoalError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            streamed.fail(f"following the download: {exc}")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow_side)
            try:
                digest = await trio.to_thread.run_sync(unpack_side)
            except (ShoalError, OSError) as exc:
                streamed.fail(str(exc))
            else:
                if streamed.error is None:
                    streamed.digest, streamed.unpacked = digest, unpacker
                else:
                    unpacker.discard()
    finally:
        streamed.ended.set()


class _GrowingFile:
    """A file being written, read from the front: a read blocks until the writer says (8-byte
    offsets on ``signals``) that more bytes are safe, and is at its end when the pipe is."""

    def __init__(self, path: Path, signals: int, streamed: Streamed) -> None:
        self.path, self.signals, self.streamed = path, signals, streamed
        self.pos = self.limit = 0
        self.fd: int | None = None

    def read(self, size: int = -1) -> bytes:
        while self.pos >= self.limit:
            news = os.read(self.signals, 8 * 512)  # whole records: 8-byte writes are atomic
            if not news:
                return b""
            self.limit = max(self.limit, *struct.unpack(f"<{len(news) // 8}Q", news))
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        n = self.limit - self.pos if size < 0 else min(size, self.limit - self.pos)
        data = os.pread(self.fd, n, self.pos)
        if not data:
            raise OSError(f"{self.path} is shorter than the {self.limit} bytes downloaded")
        self.pos += len(data)
        self.streamed.read = self.pos
        return data

    def close(self) -> None:
        os.close(self.signals)
        if self.fd is not None:
            os.close(self.fd)
