"""Fetching a release by hand: through the swarm onto this machine, verified, for inspection.

``shoal release fetch`` asks the seeder for the release's torrent and its full seed's address
(``release.fetch``, which also admits this machine's address to the full seed for the fetch: the
swarm is closed, see :mod:`seeder.swarm_access`), then downloads with a libtorrent session of its
own from the seeder's full seed, dialled directly. It does not announce: the tracker answers
enrolled hosts only, and the fleet's peers admit only their rollout's members. The archive's
digest is checked against the manifest before anything is left in the destination; on any
failure the destination is as it was.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from common.archive import file_digest
from common.errors import ConfigError, ReleaseError, ShoalError
from common.release import Manifest
from common.torrent import TorrentSession, torrent_infohash

PARTIAL = ".shoal-fetch"  # download directory inside the destination, renamed away when done


class FetchTimeout(ShoalError):
    """The swarm did not deliver the release in time."""


@dataclass(frozen=True)
class Fetched:
    release_id: str
    archive: Path
    size: int
    digest: str
    seconds: float
    sources: dict[str, int]  # payload bytes received from each peer connected at the end, by IP

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "archive": str(self.archive),
            "size": self.size,
            "digest": self.digest,
            "verified": True,
            "seconds": round(self.seconds, 3),
            "sources": self.sources,
        }


def check_destination(dest: Path) -> bool:
    """Refuse a destination that is a file or a non-empty directory; True if it must be made."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ConfigError(f"destination {dest} exists and is not a directory")
    if dest.is_dir():
        if any(dest.iterdir()):
            raise ConfigError(f"destination {dest} is not empty")
        return False
    if not dest.parent.is_dir():
        raise ConfigError(f"cannot create {dest}: {dest.parent} is not a directory")
    return True


async def fetch_release(
    info: dict[str, Any],
    dest: Path,
    *,
    bind: str,
    patience: float,
    on_progress: Callable[[float], None] | None = None,
    torrent_settings: dict[str, Any] | None = None,
) -> Fetched:
    """Download the release ``info`` (a ``release.fetch`` answer) into ``dest`` and verify it.

    Leaves ``dest/<archive>``, ``dest/manifest.json`` and ``dest/release.torrent``. Raises
    :class:`FetchTimeout` when the swarm has not delivered within ``patience`` seconds,
    :class:`ReleaseError` when the bytes do not verify; either way ``dest`` is left as found
    (a directory this call created is removed again).
    """
    manifest = Manifest.from_dict(info["release"])
    torrent = bytes(info["torrent"])
    if torrent_infohash(torrent) != manifest.infohash:
        raise ReleaseError("the seeder's torrent does not match the release manifest")
    seeds = [(str(ip), int(port)) for ip, port in info.get("seeds", [])]
    made = check_destination(dest)
    progress = [0.0]

    def seen(fraction: float) -> None:
        progress[0] = fraction
        if on_progress is not None:
            on_progress(fraction)

    started = time.monotonic()
    try:
        await trio.to_thread.run_sync(lambda: dest.mkdir(exist_ok=True))
        session = TorrentSession(bind, 0, overrides=torrent_settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            with trio.move_on_after(patience) as scope:
                sources = await session.download(
                    torrent, dest / PARTIAL, peers=seeds, on_progress=seen, announce=False
                )
            nursery.cancel_scope.cancel()  # closes the session: it announces "stopped"
        if scope.cancelled_caught:
            raise FetchTimeout(_timeout_message(progress[0], patience, info, seeds))
        archive, digest = await trio.to_thread.run_sync(_finish, dest, manifest, torrent)
    except BaseException:
        await trio.to_thread.run_sync(_undo, dest, made)
        raise
    return Fetched(
        manifest.release_id,
        archive,
        manifest.size,
        digest,
        time.monotonic() - started,
        sources,
    )


def _finish(dest: Path, manifest: Manifest, torrent: bytes) -> tuple[Path, str]:
    """Verify the downloaded archive, then move it out of the partial directory."""
    partial = dest / PARTIAL
    downloaded = partial / manifest.archive
    digest = file_digest(downloaded)
    if digest != manifest.digest:
        raise ReleaseError(f"digest mismatch: got {digest}, the manifest says {manifest.digest}")
    archive = dest / manifest.archive
    downloaded.rename(archive)
    shutil.rmtree(partial)
    (dest / "release.torrent").write_bytes(torrent)
    (dest / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return archive, digest


def _timeout_message(
    fraction: float, patience: float, info: dict[str, Any], seeds: list[tuple[str, int]]
) -> str:
    where = f"tracker {info.get('tracker', '?')}, seeder at " + (
        ", ".join(f"{ip}:{port}" for ip, port in seeds) or "none"
    )
    if fraction <= 0.0:
        return (
            f"no data from the swarm within {patience:g}s ({where}); check that this machine "
            "reaches the seeder's BitTorrent port, or pass a longer --timeout"
        )
    return f"the download stalled at {fraction:.0%} after {patience:g}s ({where})"


def _undo(dest: Path, made: bool) -> None:
    """Put the destination back as it was: empty, or absent if this fetch created it."""
    if not dest.is_dir():
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if made:
        dest.rmdir()
