"""Verify and unpack a release while it downloads, so both are done when its last piece lands.

Hashing and unpacking 50 MB after the download took 2 s at the end of a 16-host rollout, all
hosts at once on shared CPUs (bench/README.md). Instead, the pieces libtorrent has completed
and hash-checked are read back in file order (:meth:`TorrentSession.read_in_order`) and fed
through a pipe to a thread that hashes every byte and unpacks the archive as it comes
(:class:`~common.archive.StreamedUnpack`).

Nothing goes live before it is verified: the tree is unpacked into a hidden directory and
becomes the release directory only when the whole archive's digest matched the manifest. The
streaming pass is an optimisation and never the only way: if it fails for any reason (a piece
that cannot be read back, a digest that does not match, an archive that does not unpack), the
stage verifies and unpacks from the downloaded file as before, and reports what that finds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from common.archive import CHUNK, StreamedUnpack, unpack
from common.errors import ShoalError
from common.torrent import TorrentSession

log = logging.getLogger("shoal.peer.verify")

# Once the download is done, the streaming pass gets this long without progress to finish.
STREAM_STALL: Final = 10.0
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux): a bigger pipe, fewer wake-ups
PIPE_SIZE: Final = CHUNK
# Ask libtorrent for pieces in file order while streaming (see bench/README.md).
SEQUENTIAL: Final = True


@dataclass
class Streamed:
    """What the streaming pass left behind: the archive's digest if it matched the manifest
    (else None: verify from the file), and the tree unpacked from it."""

    digest: str | None = None
    unpacked: StreamedUnpack | None = None
    error: str | None = None  # why the pass gave up (logged; the file-based path takes over)
    written: int = 0  # bytes fed to the unpacker so far (progress, for the stall check)
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
    save_path: Path,
    release_dir: Path,
    expected_digest: str,
    downloaded: Callable[[dict[str, int]], None],
    *,
    peers: Sequence[tuple[str, int]] = (),
    piece_slice: tuple[int, int] | None = None,
    slice_seeds: Sequence[tuple[str, int]] = (),
) -> Streamed:
    """:meth:`TorrentSession.download`, verifying and unpacking the archive on the way.

    Calls ``downloaded`` with what the download returns as soon as it is done, then waits for
    the streaming pass (which trails it by a few pieces) and returns its :class:`Streamed`
    result (digest set only if it matched ``expected_digest``). Raises what the download
    raises; the streaming pass never fails the download.
    """
    streamed = Streamed()
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stream, torrents, torrent, save_path, release_dir, streamed)
        try:
            downloaded(
                await torrents.download(
                    torrent,
                    save_path,
                    peers=peers,
                    piece_slice=piece_slice,
                    slice_seeds=slice_seeds,
                )
            )
            await _finish(streamed)
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
    the pieces in its read-ahead window and whatever the unpacker has not yet written)."""
    while not streamed.ended.is_set():
        before = streamed.written
        with trio.move_on_after(STREAM_STALL):
            await streamed.ended.wait()
        if not streamed.ended.is_set() and streamed.written == before:
            streamed.fail(f"no progress for {STREAM_STALL:.0f}s after the download")
            return


async def _stream(
    torrents: TorrentSession, torrent: bytes, save_path: Path, dest: Path, streamed: Streamed
) -> None:
    """Read the torrent in order into a pipe; a thread unpacks from the other end."""
    unpacker = StreamedUnpack(dest)
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # the default pipe size works too, more wake-ups
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    reader = os.fdopen(r, "rb", buffering=CHUNK)

    def unpack_side() -> str:
        try:
            return unpacker.run(reader)
        finally:
            reader.close()  # a writer still sending gets EPIPE instead of blocking forever

    async def write_side() -> None:
        held: list[bytes] = []  # pieces are sent a pipe-full at a time: fewer thread wake-ups

        async def flush() -> None:
            data = b"".join(held)
            held.clear()
            await pipe.send_all(data)
            streamed.written += len(data)

        async def write(chunk: bytes) -> None:
            held.append(chunk)
            if sum(map(len, held)) >= PIPE_SIZE:
                await flush()

        try:
            async with trio.lowlevel.FdStream(w) as pipe:
                await torrents.read_in_order(torrent, save_path, write, sequential=SEQUENTIAL)
                await flush()
        except (ShoalError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            streamed.fail(f"reading the download in order: {exc}")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_side)
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
