"""Staging a release on this host: download from the swarm, verify, unpack. Nothing goes live.

Nothing is fetched before the Stage verifies (:mod:`peer.trust`): the manifest's signature by the
seeder's pinned key and the torrent's infohash against the signed manifest. The archive is
unpacked into a hidden staging directory while it downloads (:mod:`peer.verify`); it becomes
``releases/<id>/`` only after the whole archive's SHA-256 matched the signed digest.

Each step is reported. Staging is safe to repeat: an already staged release is reported as such,
and an interrupted download (even a SIGKILLed one) resumes from libtorrent's resume data, i.e.
from the pieces already written to disk.

Staging checks for disk space first and refuses, with the numbers, a release that cannot fit. A
stage that fails for any reason leaves nothing behind: the partial download, its resume data and
any half-unpacked tree are removed, so a full disk gets its space back and ``current`` is never
touched (staging never changes it).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from typing import Any

import trio

from common import messages as m
from common.archive import file_digest, streaming_dir
from common.errors import ShoalError
from common.release import Manifest
from peer.context import PeerContext
from peer.progress import Meter
from peer.space import allocated_bytes, free_bytes, shortfall, space_needed
from peer.trust import verified_manifest
from peer.verify import Streamed, download_streamed

log = logging.getLogger("shoal.peer.stage")


class StageError(ShoalError):
    """A stage step failed; the message says why, for the operator."""


def _addresses(pairs: list[list[Any]]) -> list[tuple[str, int]]:
    return [(str(p[0]), int(p[1])) for p in pairs]


def refresh(ctx: PeerContext, cmd: m.Stage) -> None:
    """A repeated Stage for a download under way: take its (possibly new) addresses, e.g. the
    slice seeds of a seeder that restarted mid-download. Ignored unless it verifies."""
    try:
        manifest = verified_manifest(ctx.release_key, cmd)
    except ShoalError as exc:
        log.warning("ignoring a repeated Stage of rollout %s: %s", cmd.rollout_id, exc)
        return
    ctx.torrents.update_sources(
        manifest.infohash, _addresses(cmd.peers), _addresses(cmd.slice_seeds)
    )


async def stage(ctx: PeerContext, cmd: m.Stage) -> None:
    rollout_id = cmd.rollout_id
    report = ctx.reporter.step
    try:
        manifest = verified_manifest(ctx.release_key, cmd)
    except ShoalError as exc:  # refused before a byte is fetched: nothing to clean up
        log.error("refusing to stage for rollout %s: %s", rollout_id, exc)
        report(rollout_id, "verify", "failed", result="error", detail=str(exc))
        report(rollout_id, "stage", "failed", result="error", detail=f"verify: {exc}")
        return
    rid = manifest.release_id
    if _already_staged(ctx, rid):
        try:
            ctx.torrents.seed(cmd.torrent, ctx.layout.download_dir(rid))
        except ShoalError as exc:  # the archive went missing: staged all the same, not seeded
            log.warning("not seeding staged release %s: %s", rid, exc)
        report(rollout_id, "stage", "succeeded", result="succeeded", detail=f"{rid} already staged")
        return
    report(rollout_id, "stage", "running", detail=rid)
    step = "download"
    try:
        report(rollout_id, step, "running")
        check_space(ctx, manifest)
        streamed = await _download(ctx, cmd, manifest)

        step = "verify"
        report(rollout_id, step, "running")
        digest = await _verify(ctx, manifest, streamed)
        report(rollout_id, step, "succeeded", result="succeeded", detail=digest)

        step = "unpack"
        report(rollout_id, step, "running")
        await _unpack(ctx, manifest, cmd.torrent, streamed)
        report(
            rollout_id,
            step,
            "succeeded",
            result="succeeded",
            detail=str(ctx.layout.release_dir(rid)),
        )
    except (ShoalError, OSError) as exc:
        reason = explain(exc)
        discard(ctx, manifest)
        report(rollout_id, step, "failed", result="error", detail=reason)
        report(rollout_id, "stage", "failed", result="error", detail=f"{step}: {reason}")
        return
    report(rollout_id, "stage", "succeeded", result="succeeded", detail=f"{rid} staged")


def _already_staged(ctx: PeerContext, rid: str) -> bool:
    return ctx.journal.release(rid) is not None and ctx.layout.release_dir(rid).is_dir()


def check_space(ctx: PeerContext, manifest: Manifest) -> None:
    """Refuse before downloading a release that cannot fit next to what is on disk."""
    have = allocated_bytes(ctx.layout.download_dir(manifest.release_id) / manifest.archive)
    need = space_needed(manifest.size, have, ratio=ctx.unpack_ratio, reserve=ctx.min_free)
    missing = shortfall(need, free_bytes(ctx.layout.root))
    if missing is not None:
        raise StageError(missing)


async def _download(ctx: PeerContext, cmd: m.Stage, manifest: Manifest) -> Streamed:
    """Fetch the archive from the swarm, verifying and unpacking it on the way (peer.verify).
    The download step is reported done when the last piece lands, with the peer's own counters;
    what the streaming pass left is returned for verify and unpack to finish."""
    started = time.monotonic()
    rid = manifest.release_id
    piece_slice = (cmd.slice[0], cmd.slice[1]) if len(cmd.slice) == 2 else None
    meter = Meter(manifest.size)

    def progress(fraction: float) -> None:
        if sample := meter.update(fraction, time.monotonic()):
            ctx.reporter.progress(cmd.rollout_id, sample.done, sample.total, sample.rate)

    def downloaded(sources: dict[str, int]) -> None:  # verify and unpack may trail a bit
        took = time.monotonic() - started
        fetched = ctx.torrents.transfer(manifest.infohash).downloaded
        detail = (
            f"{manifest.size} bytes in {took:.2f}s, {fetched} bytes fetched now (the rest was on"
            f" disk already), {len(sources)} peer(s) connected at the end"
        )
        ctx.reporter.step(
            cmd.rollout_id, "download", "succeeded", result="succeeded", detail=detail
        )

    return await download_streamed(
        ctx.torrents,
        cmd.torrent,
        ctx.layout.download_dir(rid) / manifest.archive,
        ctx.layout.release_dir(rid),
        manifest.digest,
        downloaded,
        peers=_addresses(cmd.peers),
        piece_slice=piece_slice,
        slice_seeds=_addresses(cmd.slice_seeds),
        on_progress=progress,
    )


async def _verify(ctx: PeerContext, manifest: Manifest, streamed: Streamed) -> str:
    """The archive's digest: from the streaming pass if it matched, else read from the file."""
    if streamed.digest is not None:
        return streamed.digest
    archive = ctx.layout.download_dir(manifest.release_id) / manifest.archive
    digest = await trio.to_thread.run_sync(file_digest, archive)
    if digest != manifest.digest:
        raise StageError(
            f"release {manifest.release_id}: archive digest mismatch: got {digest}, the signed"
            f" manifest says {manifest.digest}; nothing was unpacked"
        )
    return digest


async def _unpack(ctx: PeerContext, manifest: Manifest, torrent: bytes, streamed: Streamed) -> None:
    """Make the release directory (the tree the streaming pass unpacked, if it got that far)."""
    rid = manifest.release_id
    archive = ctx.layout.download_dir(rid) / manifest.archive
    await trio.to_thread.run_sync(streamed.unpack, archive, ctx.layout.release_dir(rid))
    ctx.journal.add_release(manifest.to_dict(), torrent, time.time())


def discard(ctx: PeerContext, manifest: Manifest) -> None:
    """Remove what a failed stage left: the torrent, its partial download and resume data, and
    an unpacked tree that never got journalled. ``current`` and ``previous`` are never touched.
    Never raises: cleaning up must not hide the reason the stage failed."""
    rid = manifest.release_id
    try:
        ctx.torrents.remove(manifest.infohash, delete_files=True)
    except ShoalError as exc:
        log.warning("cannot remove torrent of %s: %s", rid, exc)
    shutil.rmtree(ctx.layout.download_dir(rid), ignore_errors=True)
    try:
        staged = ctx.journal.release(rid) is not None
    except ShoalError:
        staged = False
    release_dir = ctx.layout.release_dir(rid)
    # what the streaming pass unpacked (peer.verify) never became the release: always garbage
    shutil.rmtree(streaming_dir(release_dir), ignore_errors=True)
    if not staged and rid not in (ctx.layout.current(), ctx.layout.previous()):
        shutil.rmtree(release_dir, ignore_errors=True)


def explain(exc: BaseException) -> str:
    """The operator's one-line reason, saying plainly when the disk is full."""
    text = str(exc) or type(exc).__name__
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text
    if full and "disk is full" not in text:
        return f"the disk is full: {text}"
    return text
